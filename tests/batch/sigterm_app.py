"""A Starlette app whose lifespan owns a Batcher writing to PostgreSQL, for the SIGTERM test.

Served by ``python -m uvicorn tests.batch.sigterm_app:app``. ``POST /start`` starts a
background producer putting ``OTELPERF_TEST_TOTAL`` rows ``(id, payload)``, unpaced or
at ``OTELPERF_TEST_RATE`` rows/s; ``GET /progress`` reports how far it got. On shutdown
(SIGTERM: uvicorn runs the lifespan's exit) the producer is cancelled, the batcher
stopped, and a JSON summary (rows produced, the batcher's counts) written to
``OTELPERF_TEST_SUMMARY``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from opentelemetry.metrics import NoOpMeter
from opentelemetry.trace import NoOpTracer
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from otelperf._component import ComponentTelemetry
from otelperf.batch import Batcher, PostgresCopySink

DSN = os.environ.get("OTELPERF_TEST_POSTGRES_DSN", "")
TABLE = os.environ.get("OTELPERF_TEST_TABLE", "")
DEAD_LETTER = os.environ.get("OTELPERF_TEST_DLQ", "")
SUMMARY = os.environ.get("OTELPERF_TEST_SUMMARY", "")
TOTAL = int(os.environ.get("OTELPERF_TEST_TOTAL", "100000"))
RATE = float(os.environ.get("OTELPERF_TEST_RATE", "0"))
MAX_SIZE = int(os.environ.get("OTELPERF_TEST_MAX_SIZE", "100"))
DEADLINE = float(os.environ.get("OTELPERF_TEST_DEADLINE", "30"))

state: dict[str, object] = {"produced": 0}


async def produce(batcher: Batcher) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(TOTAL):
        await batcher.put((i, f"item-{i}"))
        state["produced"] = i + 1  # counted once put() returned: the item is the batcher's
        if i % 100 == 99:
            pause = started + (i + 1) / RATE - loop.time() if RATE else 0.0
            await asyncio.sleep(max(0.0, pause))  # also lets the server answer /progress


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    pool = AsyncConnectionPool(DSN, min_size=1, max_size=4, open=False)
    await pool.open(wait=True)
    sink = PostgresCopySink(pool, table=TABLE, columns=["id", "payload"])
    batcher = Batcher(
        "events",
        sink,
        max_size=MAX_SIZE,
        max_wait=0.05,
        max_queue=TOTAL,
        dead_letter=DEAD_LETTER,
        shutdown_deadline=DEADLINE,
    )
    await batcher.start(ComponentTelemetry(NoOpTracer(), NoOpMeter("sigterm-app")))
    state["batcher"] = batcher
    try:
        yield
    finally:
        producer = state.get("producer")
        if isinstance(producer, asyncio.Task):
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        await batcher.stop()
        summary = {"produced": state["produced"], "stats": asdict(batcher.stats())}
        await asyncio.to_thread(Path(SUMMARY).write_text, json.dumps(summary), encoding="utf-8")
        await pool.close()


async def start(request: Request) -> JSONResponse:
    batcher = state["batcher"]
    assert isinstance(batcher, Batcher)
    state["producer"] = asyncio.ensure_future(produce(batcher))
    return JSONResponse({"started": True})


async def progress(request: Request) -> JSONResponse:
    batcher = state["batcher"]
    assert isinstance(batcher, Batcher)
    return JSONResponse({"produced": state["produced"], "written": batcher.stats().written})


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/start", start, methods=["POST"]),
        Route("/progress", progress),
        Route("/healthz", healthz),
    ],
    lifespan=lifespan,
)
