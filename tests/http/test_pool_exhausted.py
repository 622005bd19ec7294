"""An exhausted pool is answered with the configured status through perf.wrap."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import otelperf
from otelperf.testing import asgi_lifespan, asgi_request


def _app(perf: otelperf.Perf, hold: asyncio.Event) -> Starlette:
    async def slow(request: Request) -> PlainTextResponse:
        async with perf.pool("main").connection() as conn:
            hold.set()
            await conn.execute("SELECT pg_sleep(0.6)")
        return PlainTextResponse("slow")

    async def quick(request: Request) -> PlainTextResponse:
        async with perf.pool("main").connection() as conn:
            await conn.execute("SELECT 1")
        return PlainTextResponse("quick")

    return Starlette(routes=[Route("/slow", slow), Route("/quick", quick)])


def _config(postgres_dsn: str, status: int | None) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "conninfo": postgres_dsn,
        "min_size": 1,
        "max_size": 1,
        "timeout": "200ms",
    }
    if status is not None:
        pool["exhausted_status"] = status
    return {
        "version": 1,
        "service": {"name": "pool-503"},
        "telemetry": {"exporter": "none", "set_global": False},
        "runtime": {"process": False, "event_loop_lag": False},
        "pools": {"main": pool},
    }


def _run(perf: otelperf.Perf) -> tuple[int, str | None, int]:
    hold = asyncio.Event()
    app = perf.wrap(_app(perf, hold))

    async def drive() -> tuple[int, str | None, int]:
        async with asgi_lifespan(app):
            slow = asyncio.ensure_future(asgi_request(app, "GET", "/slow"))
            await hold.wait()  # the only connection is now in use
            try:
                quick = await asgi_request(app, "GET", "/quick")
            except otelperf.OtelperfError:
                quick = None
            slow_status = (await slow).status
        if quick is None:
            return 0, None, slow_status
        return quick.status, quick.header("retry-after"), slow_status

    return asyncio.run(drive())


def test_exhausted_pool_answers_503_with_retry_after(postgres_dsn: str) -> None:
    """With exhausted_status 503, a request that cannot get a connection gets 503, not 500."""
    exporter = InMemorySpanExporter()
    perf = otelperf.load(
        _config(postgres_dsn, 503), span_processors=[SimpleSpanProcessor(exporter)]
    )
    status, retry_after, slow_status = _run(perf)
    assert (status, retry_after, slow_status) == (503, "1", 200)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "GET /quick"]
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 503
    assert span.attributes["error.type"] == "PoolExhaustedError"


def test_exhausted_pool_without_status_raises(postgres_dsn: str) -> None:
    """Without exhausted_status the PoolExhaustedError surfaces (Starlette answers 500)."""
    perf = otelperf.load(_config(postgres_dsn, None))
    status, _, slow_status = _run(perf)
    assert slow_status == 200
    assert status == 0  # the error reached the caller
