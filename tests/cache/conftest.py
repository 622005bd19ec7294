"""Fixtures for the cache tests: SDK telemetry, caches on every backend, a Redis of our own."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import TypeAdapter

from otelperf._component import ComponentTelemetry
from otelperf.cache import Cache, build_cache
from otelperf.config._schema import CacheConfig
from tests.otlp_receiver import free_port

_ADAPTER: TypeAdapter[Any] = TypeAdapter(CacheConfig)


def cache_config(data: dict[str, Any]) -> Any:
    """A validated cache config model from a plain mapping."""
    return _ADAPTER.validate_python(data)


class Telemetry:
    """SDK providers with in-memory exporters, and helpers to read what was recorded."""

    def __init__(self) -> None:
        self.spans_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.component = ComponentTelemetry(
            self.tracer_provider.get_tracer("t"), self.meter_provider.get_meter("t")
        )

    def request_span(self, name: str = "request") -> Any:
        """A sampled parent span (what the HTTP middleware provides in an app)."""
        return self.tracer_provider.get_tracer("app").start_as_current_span(name)

    def spans(self, prefix: str = "cache.") -> list[ReadableSpan]:
        return [s for s in self.spans_exporter.get_finished_spans() if s.name.startswith(prefix)]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend(metric.data.data_points)
        return out

    def value(self, name: str, **attrs: Any) -> float:
        """Sum of the points of ``name`` having ``attrs`` (counts, for histograms)."""
        total = 0.0
        for point in self.points(name):
            if all(point.attributes.get(k) == v for k, v in attrs.items()):
                total += point.value if hasattr(point, "value") else point.count
        return total

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Fresh SDK providers, exporting to memory."""
    tel = Telemetry()
    yield tel
    tel.shutdown()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test (nor another engineer's run) uses."""
    return f"otp-test-{uuid.uuid4().hex[:12]}"


class Caches:
    """Builds caches for one test and stops them (and empties their Redis keys) afterwards."""

    def __init__(self, telemetry: Telemetry, namespace: str, redis_url: str | None) -> None:
        self.telemetry = telemetry
        self.namespace = namespace
        self.redis_url = redis_url
        self.built: list[Cache] = []

    def config(self, backend: str, **overrides: Any) -> Any:
        data: dict[str, Any] = {"backend": backend, "namespace": self.namespace}
        if backend != "memory":
            data["url"] = self.redis_url
        data.update(overrides)
        return cache_config(data)

    def build(self, backend: str, name: str = "c", **overrides: Any) -> Cache:
        cache = build_cache(name, self.config(backend, **overrides))
        self.built.append(cache)
        return cache

    def started(self, backend: str, name: str = "c", **overrides: Any) -> Cache:
        """Built and started, for sync tests (start does no I/O; async tests start and
        stop their caches inside their own event loop, where connections live)."""
        cache = self.build(backend, name, **overrides)
        asyncio.run(cache.start(self.telemetry.component))
        return cache

    def cleanup(self) -> None:
        if self.redis_url is not None:
            import redis

            client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
            try:
                keys = list(client.scan_iter(match=f"{self.namespace}:*", count=1000))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()

        async def stop_all() -> None:
            for cache in self.built:
                await cache.stop()

        asyncio.run(stop_all())


@pytest.fixture(params=["memory", "redis", "tiered"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn; Redis-backed ones need the real Redis."""
    if request.param != "memory":
        request.getfixturevalue("redis_url")
    return str(request.param)


@pytest.fixture
def caches(
    request: pytest.FixtureRequest, telemetry: Telemetry, namespace: str
) -> Iterator[Caches]:
    """A cache factory bound to this test's telemetry and namespace."""
    url = None
    redis_backend = "backend" in request.fixturenames and (
        request.getfixturevalue("backend") != "memory"
    )
    if redis_backend or "redis_url" in request.fixturenames:
        url = request.getfixturevalue("redis_url")
    made = Caches(telemetry, namespace, url)
    yield made
    made.cleanup()


def wait_for(condition: Callable[[], object], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class OwnRedis:
    """A redis-server this test starts on its own port, can freeze, stop and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, timeout=10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server: connections are refused from now on."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    """A private redis-server on a free port of 127.0.0.1, always killed at teardown."""
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
