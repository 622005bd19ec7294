"""Assert on the telemetry your own code emits through otelperf.

``capture()`` builds a :class:`~otelperf.Perf` from your config with every exporter
replaced by in-memory ones (nothing leaves the process, no global provider is
touched)::

    from otelperf.testing import capture

    def test_checkout_is_traced():
        with capture("otelperf.yaml") as telemetry:
            app = telemetry.perf.wrap(make_app())
            ...  # drive the app
            assert telemetry.spans("POST /checkout")
            assert telemetry.points("http.server.request.duration", **{"http.route": "/checkout"})

With pytest, add ``pytest_plugins = ["otelperf.testing"]`` to ``conftest.py`` and use
the ``otelperf_telemetry`` fixture (a Perf on a minimal config), or call
``capture(...)`` with your own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelperf._deferred import flush_all
from otelperf._perf import Perf
from otelperf.config import Config, ConfigSource, load_config

__all__ = [
    "ASGIResponse",
    "CapturedTelemetry",
    "asgi_lifespan",
    "asgi_request",
    "capture",
    "otelperf_telemetry",
]

_MINIMAL: dict[str, Any] = {"version": 1, "service": {"name": "otelperf-test"}}


class CapturedTelemetry:
    """The Perf under test and what it recorded."""

    def __init__(self, perf: Perf, spans: InMemorySpanExporter, reader: InMemoryMetricReader):
        self.perf = perf
        self.span_exporter = spans
        self.reader = reader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans, optionally only those called ``name``.

        Cache operations and queries still waiting for the event loop's next turn are
        reported first, so a test can assert right after the call it made.
        """
        flush_all()
        found = list(self.span_exporter.get_finished_spans())
        return [s for s in found if name is None or s.name == name]

    def metrics(self) -> dict[str, Any]:
        """Collect now; return each metric by name (its ``data`` holds the points)."""
        flush_all()
        out: dict[str, Any] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return out
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    out[metric.name] = metric
        return out

    def points(self, name: str, **attributes: Any) -> list[Any]:
        """Data points of metric ``name`` whose attributes include ``attributes``.

        Attribute names contain dots, so pass them as ``**{"http.route": "/x"}``.
        """
        metric = self.metrics().get(name)
        if metric is None:
            return []
        return [
            p
            for p in metric.data.data_points
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        ]

    def clear(self) -> None:
        """Forget the spans recorded so far (metrics are cumulative)."""
        self.span_exporter.clear()


@dataclass
class ASGIResponse:
    """What an ASGI app answered to :func:`asgi_request`."""

    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    chunks: int = 0

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None


async def asgi_request(
    app: Callable[..., Awaitable[None]],
    method: str = "GET",
    path: str = "/",
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    query: str = "",
    scheme: str = "http",
    http_version: str = "1.1",
) -> ASGIResponse:
    """Send one HTTP request through an ASGI app in-process, as a server would.

    Much cheaper than an HTTP client, for tests and benchmarks that drive many
    requests. Exceptions raised by the app propagate, as they would to a server.
    """
    scope: MutableMapping[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    if body:
        scope["headers"].append((b"content-length", str(len(body)).encode()))
    request_sent = False
    response = ASGIResponse(status=0)
    disconnect = asyncio.Event()

    async def receive() -> MutableMapping[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            response.body += message.get("body", b"")
            response.chunks += 1
            if not message.get("more_body", False):
                disconnect.set()

    await app(scope, receive, send)
    return response


@asynccontextmanager
async def asgi_lifespan(
    app: Callable[..., Awaitable[None]], *, timeout: float = 30.0
) -> AsyncIterator[MutableMapping[str, Any]]:
    """Run an ASGI app's lifespan startup on entry and shutdown on exit, as a server would.

    Yields the lifespan ``state`` mapping. A failed startup raises RuntimeError with
    the app's message.
    """
    to_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    state: MutableMapping[str, Any] = {}
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}

    async def send(message: MutableMapping[str, Any]) -> None:
        await from_app.put(message)

    task = asyncio.ensure_future(app(scope, to_app.get, send))

    async def expect(kind: str) -> None:
        getter = asyncio.ensure_future(from_app.get())
        done, _ = await asyncio.wait({getter, task}, timeout=timeout, return_when="FIRST_COMPLETED")
        if getter not in done:
            getter.cancel()
            if task in done and task.exception() is not None:
                raise RuntimeError(f"lifespan failed: {task.exception()!r}")
            raise RuntimeError(f"the app never sent {kind}")
        message = getter.result()
        if message["type"] != kind:
            raise RuntimeError(f"lifespan: expected {kind}, got {message}")

    await to_app.put({"type": "lifespan.startup"})
    await expect("lifespan.startup.complete")
    try:
        yield state
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await expect("lifespan.shutdown.complete")
        await asyncio.wait_for(task, timeout)


def _for_tests(config: Config) -> Config:
    current = config.telemetry
    telemetry = current.model_copy(
        update={
            "exporter": "none",
            "set_global": False,
            "otel_config_file": None,
            # The per-signal overrides win over `exporter`: silence them too.
            "traces": current.traces.model_copy(update={"exporter": None}),
            "metrics": current.metrics.model_copy(update={"exporter": None}),
            "logs": current.logs.model_copy(update={"export": False}),
        }
    )
    return config.model_copy(update={"telemetry": telemetry})


@contextmanager
def capture(
    source: ConfigSource | Config | None = None, *, environ: Mapping[str, str] | None = None
) -> Iterator[CapturedTelemetry]:
    """A started Perf built from ``source`` (default: a minimal config), exporting in memory."""
    if isinstance(source, Config):
        config = source
    else:
        config = load_config(_MINIMAL if source is None else source, environ=environ)
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    perf = Perf(
        _for_tests(config),
        span_processors=[SimpleSpanProcessor(exporter)],
        metric_readers=[reader],
    )
    perf.start()
    try:
        yield CapturedTelemetry(perf, exporter, reader)
    finally:
        perf.shutdown()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixture
    pass
else:

    @pytest.fixture
    def otelperf_telemetry() -> Iterator[CapturedTelemetry]:
        """A started Perf on a minimal config, with in-memory span exporter and metric reader."""
        with capture() as telemetry:
            yield telemetry
