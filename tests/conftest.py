"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.otlp_receiver import BlackHole, OtlpReceiver, free_port


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP receiver (gRPC and HTTP/protobuf) on 127.0.0.1, fresh for each test."""
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def refused_port() -> int:
    """A port on 127.0.0.1 where connections are refused: nothing listens there."""
    return free_port()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    """A collector on 127.0.0.1 that accepts connections and never answers."""
    with BlackHole() as hole:
        yield hole


pytest_plugins = ["otelperf.testing"]


def _service_missing(what: str, url: str, error: Exception) -> None:
    message = f"{what} at {url} is not reachable: {type(error).__name__}: {error}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: services must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis (OTELPERF_TEST_REDIS_URL, default redis://127.0.0.1:6379/0)."""
    url = os.environ.get("OTELPERF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
    except Exception as exc:
        _service_missing("Redis", url, exc)
    return url


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """DSN of the real PostgreSQL (OTELPERF_TEST_POSTGRES_DSN, default ...@127.0.0.1/test)."""
    dsn = os.environ.get("OTELPERF_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    import psycopg

    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except Exception as exc:
        _service_missing("PostgreSQL", dsn, exc)
    return dsn
