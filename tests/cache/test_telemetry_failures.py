"""A failing span processor or sampler never turns a cache operation into an error."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import pytest
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from otelperf._component import ComponentTelemetry
from otelperf.cache._telemetry import CacheTelemetry


class Exploding(SpanProcessor):
    """An app's processor that fails on every span."""

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("processor down")


def _sampled() -> Any:
    parent = SpanContext(random.getrandbits(128), random.getrandbits(64), False, TraceFlags(1))
    return set_span_in_context(NonRecordingSpan(parent))


@pytest.mark.parametrize("memory", [False, True], ids=["redis operation", "memory span"])
def test_processor_failure_is_logged_not_raised(
    memory: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The operation's report swallows the processor's error and logs it once."""
    provider = TracerProvider()
    provider.add_span_processor(Exploding())
    telemetry = CacheTelemetry("c", tiered=False, span_attributes={}, record_keys=False)
    telemetry.bind(ComponentTelemetry(provider.get_tracer("t"), NoOpMeter("m")))
    with caplog.at_level(logging.WARNING, logger="otelperf.cache"):
        for _ in range(3):
            start = time.time_ns()
            if memory:
                telemetry.memory_span("get", start, start + 1000, _sampled(), True, "k")
            else:
                telemetry.operation("get", start, 0.001, _sampled(), hit=True, deferred=False)
    failures = [r for r in caplog.records if "recording telemetry failed" in r.getMessage()]
    assert len(failures) == 1
