"""Fixtures for the pool tests: real PostgreSQL, real SDK providers, unique names.

Every pool a test builds gets a unique ``application_name``, so the test can find
(and terminate) exactly its own backends in ``pg_stat_activity`` while other test
runs share the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelperf._component import ComponentTelemetry
from otelperf.config._schema import PoolConfig
from otelperf.pool import Pool, build_pool


@dataclass
class Recorded:
    """SDK providers recording in memory, and readers for what they recorded."""

    telemetry: ComponentTelemetry
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = list(self.exporter.get_finished_spans())
        return [s for s in found if name is None or s.name == name]

    def metrics(self) -> dict[str, Metric]:
        out: dict[str, Metric] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = metric
        return out

    def points(self, name: str, **attributes: Any) -> list[Any]:
        metric = self.metrics().get(name)
        if metric is None:
            return []
        return [
            p
            for p in metric.data.data_points
            if all((p.attributes or {}).get(k) == v for k, v in attributes.items())
        ]

    def value(self, name: str, **attributes: Any) -> Any:
        """The single point's value (sums, gauges) or the point itself (histograms)."""
        points = self.points(name, **attributes)
        assert len(points) == 1, f"{name} {attributes}: {points}"
        point = points[0]
        return point.value if hasattr(point, "value") else point


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    """Real SDK providers: spans in an InMemorySpanExporter, metrics in an InMemoryMetricReader."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Recorded(
        ComponentTelemetry(tracer_provider.get_tracer("t"), meter_provider.get_meter("t")),
        exporter,
        reader,
        tracer_provider,
        meter_provider,
    )
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def app_name() -> str:
    """A unique application_name for this test's connections."""
    return f"otelperf-test-{uuid.uuid4().hex[:12]}"


PoolFactory = Callable[..., Pool]


def config(**fields: Any) -> PoolConfig:
    """A PoolConfig from keyword fields, validated as the loader would (durations as text)."""
    return PoolConfig.model_validate(fields)


@pytest.fixture
def make_pool(postgres_dsn: str, app_name: str) -> PoolFactory:
    """Build a pool on the test database; keyword arguments override PoolConfig fields."""

    def make(name: str = "main", **overrides: Any) -> Pool:
        settings = {"application_name": app_name, **overrides.pop("settings", {})}
        fields: dict[str, Any] = {"conninfo": postgres_dsn, "settings": settings}
        fields.update(overrides)
        return build_pool(name, config(**fields))

    return make


@pytest.fixture
def admin(postgres_dsn: str, app_name: str) -> Iterator[Admin]:
    """A separate autocommit connection to inspect (and terminate) this test's backends."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        admin = Admin(conn, app_name)
        yield admin
        admin.terminate()  # nothing of this test outlives it


class Admin:
    """Looks at this test's backends in pg_stat_activity."""

    def __init__(self, conn: psycopg.Connection[Any], app_name: str) -> None:
        self.conn = conn
        self.app_name = app_name

    def states(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT coalesce(state, '') FROM pg_stat_activity WHERE application_name = %s",
            [self.app_name],
        ).fetchall()
        return sorted(r[0] for r in rows)

    def count(self) -> int:
        return len(self.states())

    def terminate(self) -> int:
        rows = self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            [self.app_name],
        ).fetchall()
        return len(rows)

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 10.0) -> list[str]:
        """Poll pg_stat_activity until ``predicate(states)`` holds; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if predicate(states):
                return states
            if time.monotonic() > deadline:
                pytest.fail(f"pg_stat_activity never matched; last states: {states}")
            time.sleep(0.02)

    async def await_for(
        self, predicate: Callable[[list[str]], bool], timeout: float = 10.0
    ) -> list[str]:
        """:meth:`wait_for` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout)


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (on the event loop) until ``predicate()`` is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition never became true")
        await asyncio.sleep(0.005)


class TcpProxy:
    """A TCP relay on 127.0.0.1 to PostgreSQL that can go down and come back on its port.

    ``stop()`` closes the listening socket and cuts every relayed connection, as a
    server restart does; ``start()`` listens again on the same port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(0.05)  # close() does not wake a blocked accept() on Linux
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy(postgres_dsn: str) -> Iterator[TcpProxy]:
    """A restartable TCP relay to the test PostgreSQL, on 127.0.0.1."""
    info = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    relay = TcpProxy(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()
