"""Log correlation and OTLP log export."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import otelperf
from tests.otlp_receiver import OtlpReceiver, attributes


def _config(**telemetry: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "service": {"name": "logs-test"},
        "runtime": {"process": False, "event_loop_lag": False},
        "telemetry": {"set_global": False, **telemetry},
    }


def test_log_records_carry_trace_and_span_ids(caplog: pytest.LogCaptureFixture) -> None:
    """A record logged inside a span carries that span's trace and span ids."""
    perf = otelperf.load(_config(exporter="none"))
    with perf, caplog.at_level(logging.INFO, logger="app"):
        with perf.tracer.start_as_current_span("work") as span:
            logging.getLogger("app").info("inside")
        logging.getLogger("app").info("outside")
    inside, outside = caplog.records
    context = span.get_span_context()
    assert inside.otelTraceID == format(context.trace_id, "032x")  # type: ignore[attr-defined]
    assert inside.otelSpanID == format(context.span_id, "016x")  # type: ignore[attr-defined]
    assert inside.otelServiceName == "logs-test"  # type: ignore[attr-defined]
    assert outside.otelTraceID == "0"  # type: ignore[attr-defined]


def test_correlation_is_removed_at_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    """After the last Perf shuts down, records no longer get otel fields."""
    perf = otelperf.load(_config(exporter="none"))
    with perf:
        pass
    with caplog.at_level(logging.INFO, logger="app"):
        logging.getLogger("app").info("after")
    assert not hasattr(caplog.records[0], "otelTraceID")


def test_correlation_can_be_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    """logs.correlation: false leaves log records alone."""
    perf = otelperf.load(_config(exporter="none", logs={"correlation": False}))
    with perf, caplog.at_level(logging.INFO, logger="app"):
        logging.getLogger("app").info("plain")
    assert not hasattr(caplog.records[0], "otelTraceID")


def test_logs_exported_over_otlp_grpc(otlp_receiver: OtlpReceiver) -> None:
    """With logs.export, stdlib records reach a real OTLP receiver with the trace id."""
    config = _config(
        exporter="otlp",
        otlp={"endpoint": otlp_receiver.grpc_endpoint, "protocol": "grpc"},
        logs={"export": True, "level": "WARNING"},
    )
    perf = otelperf.load(config)
    with perf, perf.tracer.start_as_current_span("work") as span:
        logging.getLogger("app").warning("disk almost full")
        logging.getLogger("app").info("too low to export")
    assert otlp_receiver.wait_for(lambda: otlp_receiver.received("logs"), timeout=10)
    bodies = []
    for received in otlp_receiver.received("logs"):
        for resource_logs in received.request.resource_logs:
            assert attributes(resource_logs.resource.attributes)["service.name"] == "logs-test"
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    bodies.append(record.body.string_value)
                    assert record.trace_id.hex() == format(span.get_span_context().trace_id, "032x")
    assert bodies == ["disk almost full"]


def test_logs_exported_to_file(tmp_path: Path) -> None:
    """With the file exporter, log records land in the same OTLP JSON-lines file."""
    path = tmp_path / "telemetry.jsonl"
    perf = otelperf.load(_config(exporter="file", file={"path": str(path)}, logs={"export": True}))
    with perf:
        logging.getLogger("app").error("payment failed")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    bodies = [
        log["body"]["stringValue"]
        for record in records
        for rl in record.get("resourceLogs", [])
        for sl in rl["scopeLogs"]
        for log in sl["logRecords"]
    ]
    assert "payment failed" in bodies
