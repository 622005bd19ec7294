"""The HTTP middleware, through real Starlette and FastAPI apps."""

from __future__ import annotations

import asyncio
import random
import string
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry import baggage, propagate
from opentelemetry import context as context_api
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from otelperf.testing import CapturedTelemetry, asgi_lifespan, asgi_request, capture

BASE: dict[str, Any] = {
    "version": 1,
    "service": {"name": "mw-test"},
    "runtime": {"process": False, "event_loop_lag": False},
}


class BoomError(Exception):
    """Raised by the failing route."""


# --- the same app twice: Starlette and FastAPI ---------------------------------------


async def _stream_rows() -> AsyncIterator[bytes]:
    for i in range(3):
        await asyncio.sleep(0.05)
        yield f"row {i}\n".encode()


def starlette_app() -> Starlette:
    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["item_id"]})

    async def user(request: Request) -> PlainTextResponse:
        return PlainTextResponse("u" * int(request.query_params.get("size", "1")))

    async def boom(request: Request) -> Response:
        raise BoomError("kaboom")

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(_stream_rows())

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await request.body())

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(text.upper())
        await websocket.close()

    inner = Starlette(routes=[Route("/users/{user_id:int}", user)])
    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/boom", boom),
            Route("/stream", stream),
            Route("/echo", echo, methods=["POST"]),
            WebSocketRoute("/ws", ws),
            Mount("/api/v1", app=inner),
            Mount("/static", app=PlainTextResponse("static file")),
        ]
    )


def fastapi_app() -> FastAPI:
    app = FastAPI()
    inner = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @inner.get("/users/{user_id}")
    async def user(user_id: int, size: int = 1) -> PlainTextResponse:
        return PlainTextResponse("u" * size)

    @app.get("/boom")
    async def boom() -> None:
        raise BoomError("kaboom")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(_stream_rows())

    @app.post("/echo")
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await request.body())

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(text.upper())
        await websocket.close()

    app.mount("/api/v1", inner)
    app.mount("/static", PlainTextResponse("static file"))
    return app


@pytest.fixture(params=["starlette", "fastapi"])
def framework(request: pytest.FixtureRequest) -> str:
    """Run a test against both frameworks."""
    return str(request.param)


def build(framework: str) -> Any:
    return starlette_app() if framework == "starlette" else fastapi_app()


@pytest.fixture
def telemetry() -> Iterator[CapturedTelemetry]:
    """A Perf with in-memory telemetry and the default HTTP config."""
    with capture(BASE) as captured:
        yield captured


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def server_spans(telemetry: CapturedTelemetry) -> list[Any]:
    return [s for s in telemetry.spans() if s.kind == SpanKind.SERVER]


def series(telemetry: CapturedTelemetry, name: str) -> list[dict[str, Any]]:
    return [dict(p.attributes) for p in telemetry.points(name)]


# --- routes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/items/42", "/items/{item_id}"),
        ("/api/v1/users/7", "/api/v1/users/{user_id}"),
        ("/static/css/site.css", "/static/{path}"),
    ],
)
def test_route_template_with_mounts(
    framework: str, telemetry: CapturedTelemetry, path: str, route: str
) -> None:
    """http.route and the span name carry the full template, mount prefixes included."""
    app = telemetry.perf.wrap(build(framework))
    response = run(asgi_request(app, "GET", path))
    assert response.status == 200
    (span,) = server_spans(telemetry)
    assert span.name == f"GET {route}"
    assert span.attributes["http.route"] == route
    assert span.attributes["url.path"] == path
    (point,) = telemetry.points("http.server.request.duration")
    assert point.attributes["http.route"] == route
    assert point.attributes["http.response.status_code"] == 200
    assert point.attributes["http.request.method"] == "GET"
    assert point.attributes["url.scheme"] == "http"
    assert point.attributes["network.protocol.version"] == "1.1"


def test_unmatched_paths_collapse(framework: str, telemetry: CapturedTelemetry) -> None:
    """Paths matching no route (also inside a mount) share one span name and one series."""
    app = telemetry.perf.wrap(build(framework))

    async def drive() -> None:
        for path in (
            "/nope",
            "/deep/unknown/path",
            "/api/v1/nothing-here",
            "/api/v1/users/7/extra",
        ):
            assert (await asgi_request(app, "GET", path)).status == 404

    run(drive())
    assert {s.name for s in server_spans(telemetry)} == {"GET"}
    assert all("http.route" not in s.attributes for s in server_spans(telemetry))
    points = telemetry.points("http.server.request.duration")
    assert len(points) == 1
    assert points[0].count == 4


def test_random_paths_create_no_new_series(telemetry: CapturedTelemetry) -> None:
    """100,000 random paths leave the metric series and span names bounded."""
    app = telemetry.perf.wrap(starlette_app())
    alphabet = string.ascii_lowercase + string.digits

    async def drive() -> None:
        rng = random.Random(1)
        for i in range(100_000):
            tail = "".join(rng.choices(alphabet, k=12))
            path = f"/items/{tail}" if i % 2 else f"/{tail}/{i}"
            await asgi_request(app, "GET", path)
            if i % 10_000 == 0:
                telemetry.clear()

    run(drive())
    metrics = telemetry.metrics()
    durations = metrics["http.server.request.duration"].data.data_points
    assert len(durations) == 2  # /items/{item_id} 200 and the unmatched 404
    assert sum(p.count for p in durations) == 100_000
    assert {s.name for s in telemetry.spans()} <= {"GET", "GET /items/{item_id}"}
    for metric in metrics.values():
        assert len(metric.data.data_points) <= 4, metric.name


def test_unknown_method_becomes_other(telemetry: CapturedTelemetry) -> None:
    """A method outside the known set is reported as _OTHER, the original kept on the span."""
    app = telemetry.perf.wrap(starlette_app())
    run(asgi_request(app, "BREW", "/items/1"))
    (span,) = server_spans(telemetry)
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "BREW"
    assert span.name.startswith("HTTP")
    (point,) = telemetry.points("http.server.request.duration")
    assert point.attributes["http.request.method"] == "_OTHER"


# --- errors, sizes, streaming ----------------------------------------------------------------


def test_exception_records_500_and_propagates(framework: str, telemetry: CapturedTelemetry) -> None:
    """An unhandled exception: status 500 and error.type on span and metric, and it still raises."""
    app = telemetry.perf.wrap(build(framework))
    with pytest.raises(BoomError, match="kaboom"):
        run(asgi_request(app, "GET", "/boom"))
    (span,) = server_spans(telemetry)
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "BoomError"
    assert span.status.status_code == StatusCode.ERROR
    assert any(event.name == "exception" for event in span.events)
    (point,) = telemetry.points("http.server.request.duration")
    assert point.attributes["http.response.status_code"] == 500
    assert point.attributes["error.type"] == "BoomError"
    assert point.attributes["http.route"] == "/boom"


def test_body_sizes_do_not_leak_between_requests(
    framework: str, telemetry: CapturedTelemetry
) -> None:
    """Each request's response size is its own: a large response is not added to the next one."""
    app = telemetry.perf.wrap(build(framework))

    async def drive() -> list[int]:
        sizes = []
        for size in (5000, 10, 5000, 1):
            response = await asgi_request(app, "GET", "/api/v1/users/1", query=f"size={size}")
            sizes.append(len(response.body))
        return sizes

    sizes = run(drive())
    assert sizes == [5000, 10, 5000, 1]
    (point,) = telemetry.points("http.server.response.body.size")
    assert point.count == 4
    assert point.sum == 5000 + 10 + 5000 + 1
    assert point.max == 5000
    assert point.min == 1


def test_request_body_size_recorded(framework: str, telemetry: CapturedTelemetry) -> None:
    """A request body's size lands on http.server.request.body.size; GETs without one do not."""
    app = telemetry.perf.wrap(build(framework))

    async def drive() -> None:
        await asgi_request(app, "POST", "/echo", body=b"x" * 1234)
        await asgi_request(app, "GET", "/items/1")

    run(drive())
    (point,) = telemetry.points("http.server.request.body.size")
    assert point.count == 1
    assert point.sum == 1234
    assert point.attributes["http.request.method"] == "POST"


def test_streaming_duration_ends_with_last_chunk(
    framework: str, telemetry: CapturedTelemetry
) -> None:
    """A streamed response's duration covers every chunk (3 x 50 ms), not only the headers."""
    app = telemetry.perf.wrap(build(framework))
    response = run(asgi_request(app, "GET", "/stream"))
    assert response.body == b"row 0\nrow 1\nrow 2\n"
    (span,) = server_spans(telemetry)
    assert span.end_time is not None
    assert span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= 0.15
    (point,) = telemetry.points("http.server.request.duration")
    assert point.sum >= 0.15


def test_background_task_is_not_billed_to_the_request(telemetry: CapturedTelemetry) -> None:
    """Work after the last body chunk (a background task) does not lengthen the request."""
    from starlette.background import BackgroundTask

    async def slow_task() -> None:
        await asyncio.sleep(0.3)

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("done", background=BackgroundTask(slow_task))

    app = telemetry.perf.wrap(Starlette(routes=[Route("/bg", endpoint)]))
    started = time.perf_counter()
    run(asgi_request(app, "GET", "/bg"))
    assert time.perf_counter() - started >= 0.3
    (point,) = telemetry.points("http.server.request.duration")
    assert point.sum < 0.2


# --- propagation ---------------------------------------------------------------------------------


def test_traceparent_and_baggage_are_extracted(telemetry: CapturedTelemetry) -> None:
    """The server span continues the caller's trace, and baggage reaches the handler."""
    seen: dict[str, Any] = {}

    async def endpoint(request: Request) -> PlainTextResponse:
        seen["tenant"] = baggage.get_baggage("tenant")
        return PlainTextResponse("ok")

    app = telemetry.perf.wrap(Starlette(routes=[Route("/x", endpoint)]))
    caller = telemetry.perf.tracer.start_span("caller")
    from opentelemetry import trace

    ctx = baggage.set_baggage("tenant", "acme", trace.set_span_in_context(caller))
    headers: dict[str, str] = {}
    propagate.inject(headers, context=ctx)
    caller.end()
    telemetry.clear()
    run(asgi_request(app, "GET", "/x", headers=headers))
    (span,) = server_spans(telemetry)
    assert span.context.trace_id == caller.get_span_context().trace_id
    assert span.parent is not None
    assert span.parent.span_id == caller.get_span_context().span_id
    assert seen["tenant"] == "acme"


def test_only_one_span_per_request(telemetry: CapturedTelemetry) -> None:
    """No internal send/receive spans: a request yields exactly one span."""
    app = telemetry.perf.wrap(starlette_app())
    run(asgi_request(app, "POST", "/echo", body=b"hello"))
    assert len(telemetry.spans()) == 1


def test_handler_spans_are_children_and_context_is_restored(
    telemetry: CapturedTelemetry,
) -> None:
    """Spans started in a handler are children of the server span; nothing leaks afterwards."""

    async def endpoint(request: Request) -> PlainTextResponse:
        with telemetry.perf.tracer.start_as_current_span("inner"):
            pass
        return PlainTextResponse("ok")

    app = telemetry.perf.wrap(Starlette(routes=[Route("/x", endpoint)]))
    before = context_api.get_current()
    run(asgi_request(app, "GET", "/x"))
    assert context_api.get_current() == before
    inner = telemetry.spans("inner")[0]
    server = server_spans(telemetry)[0]
    assert inner.parent is not None
    assert inner.parent.span_id == server.context.span_id


def test_histograms_carry_exemplars(telemetry: CapturedTelemetry) -> None:
    """The duration histogram's exemplar points at the request's trace."""
    app = telemetry.perf.wrap(starlette_app())
    run(asgi_request(app, "GET", "/items/1"))
    (span,) = server_spans(telemetry)
    (point,) = telemetry.points("http.server.request.duration")
    assert point.exemplars, "no exemplar recorded"
    assert point.exemplars[0].trace_id == span.context.trace_id
    assert point.exemplars[0].span_id == span.context.span_id


# --- exclusion, headers, redaction ------------------------------------------------------------


def test_exclusion_removes_traces_and_metrics() -> None:
    """Excluded exact paths and start-anchored globs produce neither spans nor points."""
    config = {**BASE, "http": {"exclude": ["/items/1", "/api/v1/*"]}}
    with capture(config) as telemetry:
        app = telemetry.perf.wrap(starlette_app())

        async def drive() -> None:
            assert (await asgi_request(app, "GET", "/items/1")).status == 200
            assert (await asgi_request(app, "GET", "/api/v1/users/3")).status == 200
            assert (await asgi_request(app, "GET", "/items/2")).status == 200

        run(drive())
        assert [dict(s.attributes or {})["url.path"] for s in telemetry.spans()] == ["/items/2"]
        (point,) = telemetry.points("http.server.request.duration")
        assert point.count == 1


def test_headers_captured_only_when_allowed_and_secrets_redacted() -> None:
    """Only allow-listed headers are recorded; sensitive values and signatures become [REDACTED]."""
    canary = "CANARY-7f3a9c"
    config = {
        **BASE,
        "http": {
            "capture_headers": {
                "request": ["user-agent", "authorization", "cookie", "x-api-key"],
                "response": ["set-cookie", "content-type"],
            }
        },
    }

    async def endpoint(request: Request) -> PlainTextResponse:
        response = PlainTextResponse("ok")
        response.set_cookie("session", canary)
        return response

    with capture(config) as telemetry:
        app = telemetry.perf.wrap(Starlette(routes=[Route("/x", endpoint)]))
        headers = {
            "user-agent": "tester/1.0",
            "authorization": f"Bearer {canary}",
            "cookie": f"session={canary}",
            "x-api-key": canary,
            "x-not-allowed": "visible?",
        }
        query = f"page=2&X-Amz-Signature={canary}&sig={canary}"
        run(asgi_request(app, "GET", "/x", headers=headers, query=query))
        (span,) = server_spans(telemetry)
        attrs = dict(span.attributes)
        assert attrs["http.request.header.user-agent"] == ("tester/1.0",)
        assert attrs["http.request.header.authorization"] == ("[REDACTED]",)
        assert attrs["http.request.header.cookie"] == ("[REDACTED]",)
        assert attrs["http.request.header.x-api-key"] == ("[REDACTED]",)
        assert attrs["http.response.header.set-cookie"] == ("[REDACTED]",)
        assert attrs["http.response.header.content-type"] == ("text/plain; charset=utf-8",)
        assert "http.request.header.x-not-allowed" not in attrs
        assert "page=2" in attrs["url.query"]
        everything = repr(attrs) + repr(
            [dict(p.attributes) for m in telemetry.metrics().values() for p in m.data.data_points]
        )
        assert canary not in everything


def test_no_headers_captured_by_default(telemetry: CapturedTelemetry) -> None:
    """Without an allow-list no header becomes an attribute."""
    app = telemetry.perf.wrap(starlette_app())
    run(asgi_request(app, "GET", "/items/1", headers={"user-agent": "x", "authorization": "y"}))
    (span,) = server_spans(telemetry)
    assert not [k for k in span.attributes if k.startswith("http.request.header.")]


# --- SLO counters ---------------------------------------------------------------------------------


def test_slo_counters_per_route_and_service() -> None:
    """Requests are counted good or bad against latency and availability, per route and overall."""
    config = {
        **BASE,
        "http": {
            "slo": {
                "latency": {"threshold": "100ms", "target": "99%"},
                "availability": {"target": "99.9%"},
            }
        },
    }
    with capture(config) as telemetry:
        app = telemetry.perf.wrap(starlette_app())

        async def drive() -> None:
            for _ in range(3):
                await asgi_request(app, "GET", "/items/1")  # fast, good
            await asgi_request(app, "GET", "/stream")  # 150 ms: latency bad
            with pytest.raises(BoomError):
                await asgi_request(app, "GET", "/boom")  # 5xx: availability bad

        run(drive())

        def count(slo: str, result: str, route: str | None) -> int:
            total = 0
            for p in telemetry.points("otelperf.http.slo.requests"):
                a = p.attributes
                same = a["otelperf.slo"] == slo and a["otelperf.slo.result"] == result
                if same and a.get("http.route") == route:
                    total += p.value
            return total

        assert count("availability", "good", None) == 4
        assert count("availability", "bad", None) == 1
        assert count("availability", "bad", "/boom") == 1
        assert count("latency", "good", None) == 3
        assert count("latency", "bad", None) == 1
        assert count("latency", "bad", "/stream") == 1
        assert count("latency", "good", "/items/{item_id}") == 3


def test_active_requests_rise_and_fall(telemetry: CapturedTelemetry) -> None:
    """http.server.active_requests counts a request in flight and returns to zero."""
    during: list[int] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        points = telemetry.points("http.server.active_requests", **{"http.request.method": "GET"})
        during.append(sum(p.value for p in points))
        return PlainTextResponse("ok")

    app = telemetry.perf.wrap(Starlette(routes=[Route("/x", endpoint)]))
    run(asgi_request(app, "GET", "/x"))
    assert during == [1]
    points = telemetry.points("http.server.active_requests", **{"http.request.method": "GET"})
    assert sum(p.value for p in points) == 0


# --- websocket, lifespan, health -----------------------------------------------------------


def test_websocket_passes_through(framework: str, telemetry: CapturedTelemetry) -> None:
    """A websocket conversation works unchanged and its duration is recorded by route."""
    app = telemetry.perf.wrap(build(framework))
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "HELLO"
    assert not server_spans(telemetry)
    (point,) = telemetry.points("otelperf.http.websocket.duration")
    assert point.attributes["http.route"] == "/ws"


def test_lifespan_ordering() -> None:
    """otelperf starts before the app's startup and shuts down after the app's shutdown."""
    events: list[str] = []
    config = {**BASE, "telemetry": {"exporter": "none", "set_global": False}}
    import otelperf

    perf = otelperf.load(config)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        events.append(f"app startup (otelperf started={perf.started})")
        yield
        events.append(f"app shutdown (otelperf started={perf.started})")

    app = perf.wrap(Starlette(routes=[], lifespan=app_lifespan))
    with TestClient(app):
        events.append(f"serving (ready={perf.health.ready})")
    events.append(f"after (otelperf started={perf.started})")
    assert events == [
        "app startup (otelperf started=True)",
        "serving (ready=True)",
        "app shutdown (otelperf started=True)",
        "after (otelperf started=False)",
    ]


def test_lifespan_for_app_without_lifespan_support() -> None:
    """An ASGI app that rejects lifespan scopes still gets otelperf's startup and shutdown."""
    import otelperf

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("only http")
        await PlainTextResponse("bare")(scope, receive, send)

    perf = otelperf.load({**BASE, "telemetry": {"exporter": "none", "set_global": False}})
    app = perf.wrap(bare)
    with TestClient(app) as client:
        assert perf.started
        assert client.get("/anything").text == "bare"
    assert not perf.started


def test_middleware_entry_and_lifespan_helper() -> None:
    """perf.middleware() and perf.lifespan() work as Starlette constructor arguments."""
    import otelperf

    perf = otelperf.load({**BASE, "telemetry": {"exporter": "none", "set_global": False}})

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Mount("/v1", routes=[Route("/items/{item_id}", endpoint)])],
        middleware=[perf.middleware()],
        lifespan=perf.lifespan(),
    )
    with TestClient(app) as client:
        assert perf.started
        assert client.get("/v1/items/3").status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}
    assert not perf.started


def test_health_endpoints_and_readiness_checks() -> None:
    """Liveness answers ok; readiness reports each check and fails on a failing or hanging one."""
    import otelperf

    config = {
        **BASE,
        "telemetry": {"exporter": "none", "set_global": False},
        "health": {"timeout": "200ms"},
    }
    perf = otelperf.load(config)
    state = {"db": True}

    async def db_check() -> bool:
        return state["db"]

    async def hanging() -> None:
        await asyncio.sleep(10)

    perf.add_readiness_check("db", db_check)
    perf.add_readiness_check("cache", lambda: True)
    with TestClient(perf.wrap(starlette_app())) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert set(ready.json()["checks"]) == {"db", "cache"}
        state["db"] = False
        failing = client.get("/readyz")
        assert failing.status_code == 503
        assert failing.json()["checks"]["db"]["status"] == "fail"
        state["db"] = True
        perf.add_readiness_check("slow", hanging)
        started = time.perf_counter()
        slow = client.get("/readyz")
        assert slow.status_code == 503
        assert "timed out" in slow.json()["checks"]["slow"]["error"]
        assert time.perf_counter() - started < 2.0
        assert client.post("/healthz").status_code == 405
    with capture(BASE) as telemetry:  # health requests are not traced
        with TestClient(telemetry.perf.wrap(starlette_app())) as client:
            client.get("/healthz")
        assert not telemetry.spans()


def test_timed_records_span_and_histogram(telemetry: CapturedTelemetry) -> None:
    """perf.timed works as decorator (sync and async) and context manager, errors included."""
    perf = telemetry.perf

    @perf.timed("work.sync")
    def sync_work() -> int:
        return 1

    @perf.timed("work.async", {"kind": "a"})
    async def async_work() -> int:
        await asyncio.sleep(0.01)
        return 2

    assert sync_work() == 1
    assert run(async_work()) == 2
    with pytest.raises(ValueError, match="bad"), perf.timed("work.block"):
        raise ValueError("bad")
    assert {s.name for s in telemetry.spans()} == {"work.sync", "work.async", "work.block"}
    (point,) = telemetry.points("work.async", kind="a")
    assert point.sum >= 0.01
    (failed,) = telemetry.points("work.block")
    assert failed.attributes["error.type"] == "ValueError"
    assert telemetry.metrics()["work.sync"].unit == "s"


def test_compression_configured_through_http_section() -> None:
    """http.compression gzips large responses and counts the bytes saved."""
    config = {**BASE, "http": {"compression": {"algorithms": ["gzip"], "min_size": "1KiB"}}}

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("otelperf " * 2000)

    with capture(config) as telemetry:
        app = telemetry.perf.wrap(Starlette(routes=[Route("/big", endpoint)]))
        response = run(asgi_request(app, "GET", "/big", headers={"accept-encoding": "gzip"}))
        assert response.header("content-encoding") == "gzip"
        import gzip

        assert gzip.decompress(response.body) == b"otelperf " * 2000
        (saved,) = telemetry.points("otelperf.http.compression.saved")
        assert saved.value == len("otelperf " * 2000) - len(response.body)
        (size,) = telemetry.points("http.server.response.body.size")
        assert size.sum == len(response.body)  # what went on the wire


def test_pytest_fixture_gives_a_capturing_perf(otelperf_telemetry: CapturedTelemetry) -> None:
    """The otelperf_telemetry fixture (pytest_plugins = ["otelperf.testing"]) captures spans."""
    with otelperf_telemetry.perf.timed("fixture.work"):
        pass
    assert [s.name for s in otelperf_telemetry.spans()] == ["fixture.work"]
    assert otelperf_telemetry.points("fixture.work")


def test_app_startup_failure_is_not_reported_as_complete() -> None:
    """When the app's own startup fails, otelperf shuts down and never claims readiness."""
    from contextlib import asynccontextmanager

    import otelperf

    perf = otelperf.load({**BASE, "telemetry": {"exporter": "none", "set_global": False}})

    @asynccontextmanager
    async def broken(app: Any) -> AsyncIterator[None]:
        raise RuntimeError("database migration failed")
        yield  # pragma: no cover

    app = perf.wrap(Starlette(routes=[], lifespan=broken))
    sent: list[str] = []

    async def drive() -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await queue.put({"type": "lifespan.startup"})

        async def send(message: Any) -> None:
            sent.append(message["type"])

        with pytest.raises(RuntimeError, match="migration"):
            await app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send
            )

    run(drive())
    assert sent == ["lifespan.startup.failed"]
    assert not perf.started
    assert not perf.health.ready


def test_shutdown_failed_still_flushes_otelperf() -> None:
    """An app that answers shutdown with shutdown.failed still gets otelperf shut down."""
    import otelperf

    perf = otelperf.load({**BASE, "telemetry": {"exporter": "none", "set_global": False}})

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "cleanup broke"})

    app = perf.wrap(raw_app)

    async def drive() -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for kind in ("lifespan.startup", "lifespan.shutdown"):
            await queue.put({"type": kind})

        async def send(message: Any) -> None:
            pass

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send)

    run(drive())
    assert not perf.started


def test_late_request_after_shutdown_does_not_restart_telemetry() -> None:
    """A request arriving after shutdown is served without silently rebuilding telemetry."""
    import otelperf

    perf = otelperf.load({**BASE, "telemetry": {"exporter": "none", "set_global": False}})
    app = perf.wrap(starlette_app())

    async def drive() -> int:
        async with asgi_lifespan(app):
            await asgi_request(app, "GET", "/items/1")
        return (await asgi_request(app, "GET", "/items/2")).status

    assert run(drive()) == 200
    assert not perf.started


def test_redact_query_covers_token_like_parameters() -> None:
    """refresh_token, *_secret, OAuth code and ;-separated pairs are redacted in url.query."""
    from otelperf.http import redact_query

    query = "page=2&refresh_token=AAA&client_secret=BBB&code=CCC;api_key=DDD"
    redacted = redact_query(query)
    assert "page=2" in redacted
    for secret in ("AAA", "BBB", "CCC", "DDD"):
        assert secret not in redacted


def test_hung_sync_readiness_check_runs_once_at_a_time() -> None:
    """A sync check that hangs is not started again by later probes (no thread pile-up)."""
    import threading

    import otelperf

    release = threading.Event()
    calls = []

    def hangs() -> bool:
        calls.append(1)
        release.wait(5)
        return True

    config = {**BASE, "telemetry": {"exporter": "none", "set_global": False},
              "health": {"timeout": "100ms"}}  # fmt: skip
    perf = otelperf.load(config)
    perf.add_readiness_check("stuck", hangs)

    async def drive() -> list[dict[str, Any]]:
        reports = []
        for _ in range(5):
            _, report = await perf.health.readiness()
            reports.append(report["checks"]["stuck"])
        release.set()
        return reports

    reports = run(drive())
    assert len(calls) == 1
    assert all(r["status"] == "fail" for r in reports)
