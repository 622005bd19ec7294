"""The Perf lifecycle: start, shutdown, context managers, and what happens out of order."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelperf

CONFIG: dict[str, Any] = {
    "version": 1,
    "service": {"name": "inventory"},
    "telemetry": {"exporter": "none", "set_global": False, "shutdown_timeout": "2s"},
}

TELEMETRY_ATTRIBUTES = ["tracer", "meter", "tracer_provider", "meter_provider"]


def queued_spans() -> tuple[InMemorySpanExporter, BatchSpanProcessor]:
    """A batch processor that would hold spans for a minute: only a flush exports them."""
    exporter = InMemorySpanExporter()
    return exporter, BatchSpanProcessor(exporter, schedule_delay_millis=60_000)


@pytest.mark.parametrize("attribute", TELEMETRY_ATTRIBUTES)
def test_telemetry_before_start_is_a_clear_error(attribute: str) -> None:
    """perf.tracer (and meter, providers) before start() raises OtelperfError saying what to do."""
    perf = otelperf.load(CONFIG)
    with pytest.raises(otelperf.OtelperfError, match=r"not started; call perf\.start\(\)"):
        getattr(perf, attribute)


@pytest.mark.parametrize("attribute", TELEMETRY_ATTRIBUTES)
def test_telemetry_after_shutdown_is_the_same_clear_error(attribute: str) -> None:
    """After shutdown() the telemetry accessors raise the not-started error again."""
    perf = otelperf.load(CONFIG)
    perf.start()
    perf.shutdown()
    with pytest.raises(otelperf.OtelperfError, match="not started"):
        getattr(perf, attribute)


def test_start_is_idempotent() -> None:
    """A second start() keeps the providers, tracer and meter built by the first."""
    perf = otelperf.load(CONFIG)
    perf.start()
    try:
        first = (perf.tracer_provider, perf.meter_provider, perf.tracer, perf.meter)
        perf.start()
        assert (perf.tracer_provider, perf.meter_provider, perf.tracer, perf.meter) == first
        assert perf.started
    finally:
        assert perf.shutdown() is True
    assert not perf.started


def test_shutdown_is_idempotent_and_safe_before_start() -> None:
    """shutdown() before start() and a second shutdown() both return True and do nothing."""
    perf = otelperf.load(CONFIG)
    assert perf.shutdown() is True
    perf.start()
    assert perf.shutdown() is True
    assert perf.shutdown() is True


def test_with_block_starts_and_flushes_on_exit() -> None:
    """'with perf:' starts telemetry and its exit flushes spans still queued."""
    exporter, processor = queued_spans()
    perf = otelperf.load(CONFIG, span_processors=[processor])
    assert not perf.started
    with perf as entered:
        assert entered is perf
        assert perf.started
        perf.tracer.start_span("in-with").end()
        assert exporter.get_finished_spans() == ()  # still queued
    assert not perf.started
    assert [s.name for s in exporter.get_finished_spans()] == ["in-with"]


def test_with_block_shuts_down_when_the_body_raises() -> None:
    """An exception in the with block propagates, and telemetry is still flushed and stopped."""
    exporter, processor = queued_spans()
    perf = otelperf.load(CONFIG, span_processors=[processor])

    def fail_inside() -> None:
        with perf:
            perf.tracer.start_span("before-error").end()
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fail_inside()
    assert not perf.started
    assert [s.name for s in exporter.get_finished_spans()] == ["before-error"]


def test_async_with_starts_and_flushes_on_exit() -> None:
    """'async with perf:' starts telemetry and its exit flushes spans still queued."""
    exporter, processor = queued_spans()
    config = {**CONFIG, "runtime": {"event_loop_lag": False, "process": False}}
    perf = otelperf.load(config, span_processors=[processor])

    async def scenario() -> None:
        async with perf as entered:
            assert entered is perf
            assert perf.started
            perf.tracer.start_span("in-async-with").end()
            assert exporter.get_finished_spans() == ()
        assert not perf.started

    asyncio.run(scenario())
    assert [s.name for s in exporter.get_finished_spans()] == ["in-async-with"]


def test_a_perf_can_start_again_after_shutdown() -> None:
    """start() after shutdown() builds fresh providers that record again."""
    perf = otelperf.load(CONFIG)
    with perf:
        old_provider = perf.tracer_provider
    with perf:
        assert perf.tracer_provider is not old_provider
        span = perf.tracer.start_span("second-life")
        assert span.is_recording()
        span.end()


def test_repr_names_the_service_and_the_state() -> None:
    """repr(perf) shows the service name and whether telemetry is started."""
    perf = otelperf.load(CONFIG)
    assert repr(perf) == "<Perf service='inventory' not started>"
    with perf:
        assert repr(perf) == "<Perf service='inventory' started>"
    assert repr(perf) == "<Perf service='inventory' not started>"


def test_load_from_a_yaml_file_keeps_its_path(tmp_path: Path) -> None:
    """load(path) reads the YAML file and remembers where it came from."""
    path = tmp_path / "otelperf.yaml"
    path.write_text(
        "version: 1\n"
        "service: {name: from-yaml, version: 0.9.1}\n"
        "telemetry: {exporter: none, set_global: false}\n",
        encoding="utf-8",
    )
    perf = otelperf.load(path)
    assert perf.source == str(path)
    assert perf.config.service.name == "from-yaml"
    assert perf.config.service.version == "0.9.1"
    assert otelperf.load(CONFIG).source is None


@pytest.mark.parametrize(
    ("blocked", "telemetry", "extra"),
    [
        ("opentelemetry.exporter.prometheus", {"exporter": "prometheus"}, "prometheus"),
        ("opentelemetry.configuration", {"otel_config_file": "otel.yaml"}, "otelconfig"),
    ],
)
def test_missing_optional_dependency_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, blocked: str, telemetry: dict[str, object], extra: str
) -> None:
    """A feature whose optional package is absent fails at start with the exact pip line."""
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import` raise ImportError
    perf = otelperf.load(
        {"version": 1, "service": {"name": "x"}, "telemetry": {"set_global": False, **telemetry}}
    )
    with pytest.raises(otelperf.MissingDependencyError) as caught:
        perf.start()
    assert f'pip install "otelperf[{extra}]"' in str(caught.value)
    assert isinstance(caught.value, ImportError)


def test_capture_never_exports_even_with_per_signal_exporters(tmp_path: Path) -> None:
    """otelperf.testing.capture silences traces/metrics exporter overrides and log export."""
    from otelperf.testing import capture

    path = tmp_path / "must-not-exist.jsonl"
    config = {
        "version": 1,
        "service": {"name": "x"},
        "telemetry": {
            "file": {"path": str(path)},
            "traces": {"exporter": "file"},
            "metrics": {"exporter": "file"},
            "logs": {"export": True},
        },
    }
    with capture(config) as telemetry:
        with telemetry.perf.tracer.start_as_current_span("work"):
            pass
        assert telemetry.spans("work")
    assert not path.exists()


def test_failed_resource_startup_leaves_nothing_running(postgres_dsn: str) -> None:
    """If a resource cannot open, astart closes telemetry and runtime again before raising."""
    perf = otelperf.load(
        {
            "version": 1,
            "service": {"name": "x"},
            "telemetry": {"exporter": "none", "set_global": False},
            "pools": {"gone": {"conninfo": "postgresql://u@127.0.0.1:1/x", "timeout": "300ms"}},
        }
    )
    with pytest.raises(otelperf.OtelperfError):
        asyncio.run(perf.astart())
    assert not perf.started
    assert perf._runtime is None
