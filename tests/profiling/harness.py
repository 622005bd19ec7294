"""A stand-in for the HTTP middleware's profiling wiring, and the apps the tests profile.

``ProfiledApp`` calls ``Profiling.serves/handle_endpoint`` before the request,
``begin`` once the server span is current, ``response_start`` on the response's
start message, and ``end`` in the ``finally`` with the route template, the duration
up to the last body chunk and the status, exactly where ``OtelperfMiddleware._http``
calls them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from otelperf._component import ComponentTelemetry
from otelperf.config import load_config
from otelperf.config._schema import ProfilingConfig
from otelperf.http._routes import RouteTable, find_routes_owner
from otelperf.profiling import PROFILE_EVENT, Profiling
from otelperf.testing import CapturedTelemetry, capture

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN = "s3cret-token-for-tests-0123456789"
CAPTURED = "otelperf.profile.captured"


class ProfiledApp:
    """``app`` with profiling wired the way the middleware wires it."""

    def __init__(self, app: ASGIApp, profiling: Profiling, tracer: Tracer) -> None:
        self.app = app
        self.profiling = profiling
        self.tracer = tracer
        self.routes = RouteTable(find_routes_owner(app))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        profiling = self.profiling
        if profiling.serves(scope) and await profiling.handle_endpoint(scope, receive, send):
            return
        start = time.perf_counter()
        span = self.tracer.start_span(scope["method"], kind=SpanKind.SERVER)
        token = context_api.attach(trace.set_span_in_context(span))
        session = profiling.begin(scope)
        status = 0
        ended: float | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, ended
            if message["type"] == "http.response.start":
                status = message["status"]
                message = profiling.response_start(session, message)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                ended = time.perf_counter()

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            duration = (ended or time.perf_counter()) - start
            found = scope.get("route")
            route = None if found is None else self.routes.template(found, scope.get("app"))
            if session is not None:
                profiling.end(
                    session,
                    span=span,
                    route=route,
                    duration=duration,
                    status=status,
                    method=scope["method"],
                )
            span.end()
            context_api.detach(token)


class BoomError(Exception):
    """Raised by the failing route."""


# --- the work the routes do (their names are what the profiles must show) -----------------


def crunch_numbers(seconds: float) -> int:
    """Pure-Python CPU work for ``seconds`` of wall time."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        for i in range(200):
            total += i * i
    return total


def grind_other_numbers(seconds: float) -> int:
    """The same work under another name, to tell two requests' profiles apart."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        for i in range(200):
            total -= i * i
    return total


async def fetch_slowly(seconds: float) -> str:
    """Await-bound work: waits ``seconds`` like a slow query would."""
    await asyncio.sleep(seconds)
    return "fetched"


def make_app() -> Starlette:
    """The app under test: CPU-bound, await-bound and fast routes."""

    async def cpu(request: Request) -> PlainTextResponse:
        crunch_numbers(float(request.query_params.get("s", "0.15")))
        return PlainTextResponse("cpu")

    async def io(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await fetch_slowly(float(request.query_params.get("s", "0.15"))))

    async def boom(request: Request) -> PlainTextResponse:
        crunch_numbers(0.1)
        raise BoomError("boom")

    async def fast(request: Request) -> PlainTextResponse:
        return PlainTextResponse("fast")

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["item_id"])

    async def special(request: Request) -> PlainTextResponse:
        return PlainTextResponse("special")

    async def overlap_a(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.02)  # lets the other request start before this one works
        crunch_numbers(0.12)
        await asyncio.sleep(0.02)
        return PlainTextResponse("a")

    async def overlap_b(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.02)
        grind_other_numbers(0.12)
        await asyncio.sleep(0.02)
        return PlainTextResponse("b")

    return Starlette(
        routes=[
            Route("/reports/cpu", cpu),
            Route("/reports/io", io),
            Route("/reports/boom", boom),
            Route("/fast", fast),
            Route("/items/special", special),
            Route("/items/{item_id}", item),
            Route("/overlap/a", overlap_a),
            Route("/overlap/b", overlap_b),
        ]
    )


# --- running it ------------------------------------------------------------------------


class Rig:
    """A started ``Profiling`` on an in-memory-exporting Perf, and the app wired to it."""

    def __init__(self, telemetry: CapturedTelemetry, profiling: Profiling, directory: Path):
        self.telemetry = telemetry
        self.profiling = profiling
        self.directory = directory
        self.app = ProfiledApp(make_app(), profiling, telemetry.perf.tracer)

    def events(self) -> list[dict[str, Any]]:
        """Attributes of every profile event recorded on finished spans."""
        return [
            dict(event.attributes or {})
            for span in self.telemetry.spans()
            for event in span.events
            if event.name == PROFILE_EVENT
        ]

    def count(self, outcome: str, hook: str | None = None) -> int:
        """``otelperf.profile.captured`` points with ``outcome`` (and ``hook``), summed."""
        self.profiling.flush(10)  # kept and failed are counted by the writer thread
        attrs: dict[str, Any] = {"otelperf.profile.outcome": outcome}
        if hook is not None:
            attrs["otelperf.profile.hook"] = hook
        return sum(int(p.value) for p in self.telemetry.points(CAPTURED, **attrs))

    def profile_ids(self) -> list[str]:
        """Ids of the complete profiles on disk (those with metadata), oldest first."""
        self.profiling.flush(10)
        return sorted(
            p.name.split(".", 1)[0]
            for p in self.directory.iterdir()
            if p.name.endswith(".json") and not p.name.endswith(".speedscope.json")
        )

    def meta(self, profile_id: str) -> dict[str, Any]:
        """The metadata of one profile."""
        data: dict[str, Any] = json.loads((self.directory / f"{profile_id}.json").read_text())
        return data


@contextmanager
def rig(tmp_path: Path, profiling: dict[str, Any]) -> Iterator[Rig]:
    """A Rig whose profiles go to ``tmp_path / "profiles"``."""
    directory = tmp_path / "profiles"
    config = load_config(
        {
            "version": 1,
            "service": {"name": "profiling-test"},
            "runtime": {"process": False, "event_loop_lag": False},
            "profiling": {"output_dir": str(directory), **profiling},
        }
    )
    # The Perf only provides telemetry: its own profiling section stays empty, so the
    # component under test is the only one (whether or not Perf builds one itself).
    with capture(
        config.model_copy(update={"profiling": ProfilingConfig.model_validate({})})
    ) as telemetry:
        component = Profiling(config.profiling)
        component.open(ComponentTelemetry(telemetry.perf.tracer, telemetry.perf.meter))
        try:
            yield Rig(telemetry, component, directory)
        finally:
            component.close()
