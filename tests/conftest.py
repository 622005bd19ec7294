"""Fixtures shared by the whole suite."""

from __future__ import annotations

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
