"""Telemetry built from config, checked against a real OTLP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import otelperf
from otelperf.telemetry import BYTES_BUCKETS, SECONDS_BUCKETS
from tests.otlp_receiver import BlackHole, OtlpReceiver, free_port

PROTOCOLS = ["grpc", "http/protobuf"]

# Short timers keep the suite fast: spans leave within 100 ms, metrics every 200 ms.
FAST: dict[str, Any] = {
    "traces": {"schedule_delay": "100ms"},
    "metrics": {"interval": "200ms"},
}

SERVICE: dict[str, Any] = {
    "name": "checkout",
    "version": "2.3.4",
    "environment": "staging",
    "attributes": {"team": "payments", "cloud.region": "eu-west-1"},
}

SHUTDOWN_TIMEOUT = 1.0
SHUTDOWN_MARGIN = 1.0
# An exporter deadline well past shutdown_timeout, so only the bound can end shutdown early
# (kept short enough that abandoned exporter threads do not linger through the whole suite).
EXPORT_TIMEOUT = "5s"

# The explicit-bucket boundaries the OpenTelemetry metrics spec sets as the SDK default.
SDK_DEFAULT_BUCKETS = (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)


def write_config(
    tmp_path: Path, telemetry: dict[str, Any], service: dict[str, Any] | None = None
) -> Path:
    """An otelperf.yaml in tmp_path; never installs global providers."""
    document = {
        "version": 1,
        "service": service or SERVICE,
        "telemetry": {"set_global": False, **telemetry},
    }
    path = tmp_path / "otelperf.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def otlp(endpoint: str, protocol: str, **options: Any) -> dict[str, Any]:
    return {"exporter": "otlp", "otlp": {"endpoint": endpoint, "protocol": protocol, **options}}


def endpoint_of(receiver: OtlpReceiver, protocol: str) -> str:
    return receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint


def emit(perf: otelperf.Perf, name: str = "place-order") -> None:
    """One parent/child trace and one counter increment."""
    with perf.tracer.start_as_current_span(name) as span:
        span.set_attribute("order.items", 3)
        with perf.tracer.start_as_current_span(f"{name}.child"):
            pass
    perf.meter.create_counter("otelperf.test.orders", unit="{order}").add(1)


def expected_resource() -> dict[str, Any]:
    return {
        "service.name": "checkout",
        "service.version": "2.3.4",
        "deployment.environment.name": "staging",
        "team": "payments",
        "cloud.region": "eu-west-1",
    }


def metric_points(reader: InMemoryMetricReader) -> dict[str, Metric]:
    data = reader.get_metrics_data()
    assert data is not None, "the reader collected nothing"
    return {
        metric.name: metric
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }


# --- OTLP export ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_otlp_export_delivers_spans_and_metrics_with_the_resource(
    tmp_path: Path, otlp_receiver: OtlpReceiver, protocol: str
) -> None:
    """Spans and metrics of a Perf loaded from YAML arrive with the configured resource."""
    path = write_config(tmp_path, {**otlp(endpoint_of(otlp_receiver, protocol), protocol), **FAST})
    perf = otelperf.load(path)
    perf.start()
    try:
        emit(perf)
        arrived = otlp_receiver.wait_for(
            lambda: (
                len(otlp_receiver.spans()) >= 2
                and "otelperf.test.orders" in otlp_receiver.metric_names()
            ),
            timeout=10,
        )
        assert arrived, (otlp_receiver.span_names(), otlp_receiver.metric_names())
    finally:
        assert perf.shutdown() is True

    transports = {r.transport for r in otlp_receiver.received()}
    assert transports == {"grpc" if protocol == "grpc" else "http"}
    spans = {span.name: (resource, span) for resource, span in otlp_receiver.spans()}
    assert set(spans) == {"place-order", "place-order.child"}
    resource, parent = spans["place-order"]
    assert {k: resource.get(k) for k in expected_resource()} == expected_resource()
    assert resource["telemetry.sdk.language"] == "python"
    _, child = spans["place-order.child"]
    assert len(parent.trace_id) == 16
    assert child.trace_id == parent.trace_id
    assert child.parent_span_id == parent.span_id
    for metric_resource, metric in otlp_receiver.metrics():
        if metric.name == "otelperf.test.orders":
            assert {k: metric_resource.get(k) for k in expected_resource()} == expected_resource()
            assert metric.unit == "{order}"
            assert metric.sum.data_points[0].as_int == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_otlp_gzip_compression(tmp_path: Path, otlp_receiver: OtlpReceiver, protocol: str) -> None:
    """compression: gzip exports still arrive; over HTTP the body is sent gzip-encoded."""
    telemetry = {**otlp(endpoint_of(otlp_receiver, protocol), protocol, compression="gzip"), **FAST}
    perf = otelperf.load(write_config(tmp_path, telemetry))
    with perf:
        emit(perf)
        assert otlp_receiver.wait_for(
            lambda: otlp_receiver.spans() and otlp_receiver.metric_names(), timeout=10
        )
    received = otlp_receiver.received()
    if protocol == "http/protobuf":
        assert {r.content_encoding for r in received} == {"gzip"}
    else:
        # gRPC decompresses below the servicer API; decoding the request at all is the proof
        # the receiver could read what the gzip-configured exporter sent.
        assert {r.transport for r in received} == {"grpc"}
    assert "place-order" in otlp_receiver.span_names()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_otlp_headers_are_sent_with_lower_case_names(
    tmp_path: Path, otlp_receiver: OtlpReceiver, protocol: str
) -> None:
    """Configured headers reach the collector, even written with capitals (gRPC refuses those)."""
    headers = {"Authorization": "Bearer t0k3n", "X-Scope-OrgID": "tenant-1"}
    telemetry = {**otlp(endpoint_of(otlp_receiver, protocol), protocol, headers=headers), **FAST}
    perf = otelperf.load(write_config(tmp_path, telemetry))
    with perf:
        emit(perf)
        assert otlp_receiver.wait_for(lambda: otlp_receiver.spans(), timeout=10)
    for received in otlp_receiver.received():
        assert received.headers["authorization"] == "Bearer t0k3n"
        assert received.headers["x-scope-orgid"] == "tenant-1"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_credentials_in_the_endpoint_are_sent_as_basic_auth(
    tmp_path: Path, otlp_receiver: OtlpReceiver, protocol: str
) -> None:
    """user:password@ in the endpoint becomes a Basic authorization header, for gRPC too."""
    port = otlp_receiver.grpc_port if protocol == "grpc" else otlp_receiver.http_port
    endpoint = f"http://ingest:p%40ss@127.0.0.1:{port}"
    perf = otelperf.load(write_config(tmp_path, {**otlp(endpoint, protocol), **FAST}))
    with perf:
        emit(perf)
        assert otlp_receiver.wait_for(lambda: otlp_receiver.spans(), timeout=10)
    expected = "Basic " + base64.b64encode(b"ingest:p@ss").decode()
    assert {r.headers.get("authorization") for r in otlp_receiver.received()} == {expected}


# --- shutdown against a collector that is down or never answers ---------------------


def _bad_endpoint(kind: str, refused_port: int, black_hole: BlackHole) -> str:
    if kind == "refused":
        return f"http://127.0.0.1:{refused_port}"
    return black_hole.endpoint


def _abandoned_warning(caplog: pytest.LogCaptureFixture) -> bool:
    return any(
        r.name == "otelperf.telemetry" and "did not finish" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("collector", ["refused", "black_hole"])
def test_shutdown_is_bounded_when_the_collector_is_down(
    tmp_path: Path,
    refused_port: int,
    black_hole: BlackHole,
    caplog: pytest.LogCaptureFixture,
    collector: str,
    protocol: str,
) -> None:
    """shutdown() returns within shutdown_timeout + margin; False when it abandoned the flush."""
    endpoint = _bad_endpoint(collector, refused_port, black_hole)
    telemetry = {
        **otlp(endpoint, protocol, timeout=EXPORT_TIMEOUT),  # longer than shutdown_timeout
        **FAST,
        "shutdown_timeout": f"{SHUTDOWN_TIMEOUT}s",
    }
    perf = otelperf.load(write_config(tmp_path, telemetry))
    perf.start()
    emit(perf)
    started = time.monotonic()
    finished = perf.shutdown()
    elapsed = time.monotonic() - started
    report = f"shutdown[{collector}, {protocol}, sync]: {elapsed:.3f}s -> {finished}"
    print(report)
    assert elapsed < SHUTDOWN_TIMEOUT + SHUTDOWN_MARGIN, report
    assert finished is not _abandoned_warning(caplog), report
    if collector == "black_hole":
        # It never answers, so nothing can finish before the deadline.
        assert finished is False, report
        assert elapsed >= SHUTDOWN_TIMEOUT * 0.95, report
        assert black_hole.connections >= 1, "the exporter never reached the black hole"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("collector", ["refused", "black_hole"])
def test_ashutdown_is_bounded_and_does_not_block_the_loop(
    tmp_path: Path,
    refused_port: int,
    black_hole: BlackHole,
    caplog: pytest.LogCaptureFixture,
    collector: str,
    protocol: str,
) -> None:
    """await perf.ashutdown() is bounded like shutdown() while the event loop keeps running."""
    endpoint = _bad_endpoint(collector, refused_port, black_hole)
    telemetry = {
        **otlp(endpoint, protocol, timeout=EXPORT_TIMEOUT),
        **FAST,
        "shutdown_timeout": f"{SHUTDOWN_TIMEOUT}s",
    }
    perf = otelperf.load(write_config(tmp_path, telemetry))
    tick = 0.01

    async def scenario() -> tuple[bool, float, int]:
        await perf.astart()
        emit(perf)
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(tick)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        finished = await perf.ashutdown()
        elapsed = time.monotonic() - started
        stop.set()
        await task
        return finished, elapsed, ticks

    finished, elapsed, ticks = asyncio.run(scenario())
    expected_ticks = elapsed / tick
    report = (
        f"shutdown[{collector}, {protocol}, async]: {elapsed:.3f}s -> {finished}; "
        f"loop ticked {ticks} times of ~{expected_ticks:.0f}"
    )
    print(report)
    assert elapsed < SHUTDOWN_TIMEOUT + SHUTDOWN_MARGIN, report
    assert ticks >= 0.5 * expected_ticks, report
    assert finished is not _abandoned_warning(caplog), report
    if collector == "black_hole":
        assert finished is False, report
        assert elapsed >= SHUTDOWN_TIMEOUT * 0.95, report


def test_ashutdown_cancelled_with_its_loop_leaves_no_thread_error(
    tmp_path: Path, black_hole: BlackHole
) -> None:
    """Cancelling ashutdown and closing the loop lets the shutdown thread end quietly."""
    telemetry = {**otlp(black_hole.endpoint, "grpc", timeout=EXPORT_TIMEOUT), **FAST}
    perf = otelperf.load(write_config(tmp_path, {**telemetry, "shutdown_timeout": "500ms"}))

    async def scenario() -> None:
        await perf.astart()
        emit(perf)
        task = asyncio.create_task(perf.ashutdown())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())  # closes the loop while the shutdown thread still waits
    for thread in threading.enumerate():
        if thread.name == "otelperf-ashutdown":
            thread.join(5)
            assert not thread.is_alive()
    # An exception in that thread would surface here as PytestUnhandledThreadExceptionWarning,
    # an error under filterwarnings=error.


# --- histograms ---------------------------------------------------------------------


def _histogram_perf(tmp_path: Path, reader: InMemoryMetricReader, **metrics: Any) -> otelperf.Perf:
    telemetry = {"exporter": "none", "metrics": {"interval": "200ms", **metrics}}
    return otelperf.load(write_config(tmp_path, telemetry), metric_readers=[reader])


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("s", SECONDS_BUCKETS),
        ("ms", tuple(b * 1000 for b in SECONDS_BUCKETS)),
        ("By", BYTES_BUCKETS),
        ("{request}", SDK_DEFAULT_BUCKETS),
    ],
)
def test_histogram_buckets_follow_the_unit(
    tmp_path: Path, unit: str, expected: tuple[float, ...]
) -> None:
    """Explicit histograms get boundaries for their unit; unknown units keep the SDK default."""
    reader = InMemoryMetricReader()
    with _histogram_perf(tmp_path, reader) as perf:
        perf.meter.create_histogram("otelperf.test.h", unit=unit).record(0.3)
        point = metric_points(reader)["otelperf.test.h"].data.data_points[0]
    assert isinstance(point, HistogramDataPoint)
    assert tuple(point.explicit_bounds) == pytest.approx(expected)
    assert point.count == 1


def test_histogram_advisory_boundaries_win_over_the_unit(tmp_path: Path) -> None:
    """An instrument's explicit_bucket_boundaries_advisory is kept, even with unit s."""
    reader = InMemoryMetricReader()
    with _histogram_perf(tmp_path, reader) as perf:
        perf.meter.create_histogram(
            "otelperf.test.advised", unit="s", explicit_bucket_boundaries_advisory=[0.5, 1.0, 2.0]
        ).record(0.7)
        point = metric_points(reader)["otelperf.test.advised"].data.data_points[0]
    assert isinstance(point, HistogramDataPoint)
    assert tuple(point.explicit_bounds) == (0.5, 1.0, 2.0)
    assert list(point.bucket_counts) == [0, 1, 0, 0]


def test_exponential_histograms(tmp_path: Path) -> None:
    """metrics.histograms: exponential gives base-2 exponential histogram points."""
    reader = InMemoryMetricReader()
    with _histogram_perf(tmp_path, reader, histograms="exponential") as perf:
        histogram = perf.meter.create_histogram("otelperf.test.exp", unit="s")
        for value in (0.001, 0.01, 0.1, 1.0):
            histogram.record(value)
        point = metric_points(reader)["otelperf.test.exp"].data.data_points[0]
    assert isinstance(point, ExponentialHistogramDataPoint)
    assert point.count == 4
    assert point.min == pytest.approx(0.001)
    assert point.max == pytest.approx(1.0)


# --- sampling -----------------------------------------------------------------------


def test_sample_ratio_zero_drops_roots_but_follows_a_sampled_parent(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    """sample_ratio 0 records no root span; a child of a sampled remote parent is still kept."""
    telemetry = {**otlp(otlp_receiver.grpc_endpoint, "grpc"), **FAST}
    telemetry["traces"] = {**telemetry["traces"], "sample_ratio": 0}
    perf = otelperf.load(write_config(tmp_path, telemetry))
    sampled_parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    unsampled_parent = SpanContext(
        trace_id=0x1AF7651916CD43DD8448EB211C80319C,
        span_id=0xC7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )
    with perf:
        root = perf.tracer.start_span("root")
        assert not root.is_recording()
        assert not root.get_span_context().trace_flags.sampled
        root.end()
        for name, parent in (
            ("child-of-sampled", sampled_parent),
            ("child-of-unsampled", unsampled_parent),
        ):
            ctx = trace_api.set_span_in_context(NonRecordingSpan(parent))
            token = context_api.attach(ctx)
            try:
                with perf.tracer.start_as_current_span(name) as span:
                    assert span.is_recording() is parent.trace_flags.sampled
            finally:
                context_api.detach(token)
    # shutdown flushed everything: what is not here was never exported.
    assert otlp_receiver.span_names() == ["child-of-sampled"]
    ((_, exported),) = otlp_receiver.spans()
    assert exported.trace_id == sampled_parent.trace_id.to_bytes(16, "big")
    assert exported.parent_span_id == sampled_parent.span_id.to_bytes(8, "big")


# --- file, console, none ---------------------------------------------------------------


def _hex_to_base64(value: Any) -> Any:
    """Undo OTLP/JSON's hex ids so protobuf's JSON parser (base64 bytes) accepts them."""
    if isinstance(value, dict):
        return {
            key: base64.b64encode(bytes.fromhex(item)).decode()
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(item, str)
            else _hex_to_base64(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_hex_to_base64(item) for item in value]
    return value


def test_file_exporter_writes_otlp_json_lines(tmp_path: Path) -> None:
    """exporter: file appends OTLP JSON lines (hex ids) that parse back into OTLP requests."""
    out = tmp_path / "out" / "telemetry.jsonl"  # the directory does not exist yet
    telemetry = {"exporter": "file", "file": {"path": str(out)}, **FAST}
    with otelperf.load(write_config(tmp_path, telemetry)) as perf:
        emit(perf)
    lines = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    trace_records = [r for r in records if "resourceSpans" in r]
    metric_records = [r for r in records if "resourceMetrics" in r]
    assert trace_records
    assert metric_records
    assert len(trace_records) + len(metric_records) == len(records)

    spans = [
        (resource_spans["resource"], span)
        for record in trace_records
        for resource_spans in record["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    ]
    assert sorted(span["name"] for _, span in spans) == ["place-order", "place-order.child"]
    for resource, span in spans:
        attrs = {a["key"]: a["value"] for a in resource["attributes"]}
        assert attrs["service.name"] == {"stringValue": "checkout"}
        assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"]), span["traceId"]
        assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"]), span["spanId"]

    request = json_format.Parse(
        json.dumps(_hex_to_base64(trace_records[0])), ExportTraceServiceRequest()
    )
    parsed_ids = {
        span.trace_id.hex()
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }
    assert parsed_ids <= {span["traceId"] for _, span in spans}
    metrics_request = json_format.Parse(
        json.dumps(metric_records[-1]), ExportMetricsServiceRequest()
    )
    names = {
        metric.name
        for resource_metrics in metrics_request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }
    assert "otelperf.test.orders" in names


def test_console_exporter_writes_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """exporter: console prints spans and metrics on sys.stdout as it is at start()."""
    with otelperf.load(write_config(tmp_path, {"exporter": "console", **FAST})) as perf:
        emit(perf, "console-span")
    out = capsys.readouterr().out
    assert '"name": "console-span"' in out
    assert "otelperf.test.orders" in out


def test_none_exporter_sends_nothing_but_in_process_readers_work(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    """exporter: none sends nothing, even with an endpoint set; in-process readers still see all."""
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    telemetry = {
        "exporter": "none",
        "otlp": {"endpoint": otlp_receiver.grpc_endpoint},
        **FAST,
    }
    perf = otelperf.load(
        write_config(tmp_path, telemetry),
        metric_readers=[reader],
        span_processors=[SimpleSpanProcessor(spans)],
    )
    with perf:
        emit(perf)
        assert "otelperf.test.orders" in metric_points(reader)
    assert sorted(s.name for s in spans.get_finished_spans()) == [
        "place-order",
        "place-order.child",
    ]
    assert otlp_receiver.received() == []


# --- prometheus -------------------------------------------------------------------------


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


def test_prometheus_exporter_serves_metrics_until_shutdown(tmp_path: Path) -> None:
    """exporter: prometheus serves our metrics on 127.0.0.1; the port closes at shutdown."""
    port = free_port()
    telemetry = {"exporter": "prometheus", "prometheus": {"host": "127.0.0.1", "port": port}}
    perf = otelperf.load(write_config(tmp_path, telemetry))
    with perf:
        perf.meter.create_counter("otelperf.test.scraped").add(7, {"route": "/items/{id}"})
        text = _scrape(port)
        assert re.search(
            r'^otelperf_test_scraped_total\{.*route="/items/\{id\}".*\} 7\.0$', text, re.M
        ), text
        assert re.search(r'^target_info\{.*service_name="checkout".*\} 1\.0$', text, re.M), text
    with pytest.raises(urllib.error.URLError):
        _scrape(port)


def test_prometheus_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A Prometheus port already taken fails start() with one message naming host and port."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        telemetry = {"exporter": "prometheus", "prometheus": {"host": "127.0.0.1", "port": port}}
        perf = otelperf.load(write_config(tmp_path, telemetry))
        with pytest.raises(
            otelperf.OtelperfError, match=rf"telemetry\.prometheus: .*127\.0\.0\.1:{port}"
        ):
            perf.start()
    assert not perf.started


# --- otel_config_file ---------------------------------------------------------------------


def _otel_config(endpoint: str, *, disabled: bool = False) -> str:
    return f"""\
file_format: "1.0"
disabled: {str(disabled).lower()}
resource:
  attributes:
    - {{name: service.name, value: from-otel-file}}
    - {{name: deployment.environment.name, value: prod}}
tracer_provider:
  processors:
    - batch:
        schedule_delay: 100
        exporter:
          otlp_grpc: {{endpoint: "{endpoint}", timeout: 5000}}
meter_provider:
  readers:
    - periodic:
        interval: 200
        exporter:
          otlp_grpc: {{endpoint: "{endpoint}", timeout: 5000}}
"""


def test_otel_config_file_is_used_as_is(tmp_path: Path, otlp_receiver: OtlpReceiver) -> None:
    """otel_config_file (relative to our file) builds the providers from a standard OTel config."""
    (tmp_path / "otel.yaml").write_text(_otel_config(otlp_receiver.grpc_endpoint), encoding="utf-8")
    path = write_config(tmp_path, {"otel_config_file": "otel.yaml", "shutdown_timeout": "2s"})
    reader = InMemoryMetricReader()
    perf = otelperf.load(path, metric_readers=[reader])
    with perf:
        emit(perf)
        assert otlp_receiver.wait_for(
            lambda: (
                len(otlp_receiver.spans()) >= 2
                and "otelperf.test.orders" in otlp_receiver.metric_names()
            ),
            timeout=10,
        ), (otlp_receiver.span_names(), otlp_receiver.metric_names())
        # Readers passed to load() are attached to that file's meter provider too.
        assert "otelperf.test.orders" in metric_points(reader)
    for resource in otlp_receiver.resource_attributes():
        assert resource["service.name"] == "from-otel-file"
        assert resource["deployment.environment.name"] == "prod"
        assert "team" not in resource  # otelperf's service section does not apply


def test_otel_config_file_disabled_exports_nothing(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    """disabled: true in the OTel config file turns the SDK off, as OpenTelemetry specifies."""
    (tmp_path / "otel.yaml").write_text(
        _otel_config(otlp_receiver.grpc_endpoint, disabled=True), encoding="utf-8"
    )
    path = write_config(tmp_path, {"otel_config_file": "otel.yaml"})
    with otelperf.load(path) as perf:
        emit(perf)
        assert not perf.tracer.start_span("x").is_recording()
    assert otlp_receiver.received() == []


# --- application providers, OTEL_SDK_DISABLED ---------------------------------------------


def test_application_providers_are_used_and_left_running(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    """Providers passed to load() carry our telemetry, and perf.shutdown() leaves them running."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(
        resource=Resource.create({"service.name": "the-app"}), shutdown_on_exit=False
    )
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        path = write_config(tmp_path, {**otlp(otlp_receiver.grpc_endpoint, "grpc"), **FAST})
        perf = otelperf.load(path, tracer_provider=tracer_provider, meter_provider=meter_provider)
        with perf:
            assert perf.tracer_provider is tracer_provider
            assert perf.meter_provider is meter_provider
            emit(perf)
        assert perf.shutdown() is True

        tracer_provider.get_tracer("app").start_span("after-perf-shutdown").end()
        meter_provider.get_meter("app").create_counter("app.after").add(1)
        names = [s.name for s in spans.get_finished_spans()]
        assert names == ["place-order.child", "place-order", "after-perf-shutdown"]
        assert {s.resource.attributes["service.name"] for s in spans.get_finished_spans()} == {
            "the-app"
        }
        assert {"otelperf.test.orders", "app.after"} <= set(metric_points(reader))
        assert otlp_receiver.received() == []  # otelperf's own exporter was never built
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


def test_otel_sdk_disabled_exports_nothing(
    tmp_path: Path, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_SDK_DISABLED=true: the same config that exports otherwise sends nothing."""
    path = write_config(tmp_path, {**otlp(otlp_receiver.grpc_endpoint, "grpc"), **FAST})
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with otelperf.load(path) as perf:
        emit(perf)
        assert not perf.tracer.start_span("x").is_recording()
    assert otlp_receiver.received() == []

    monkeypatch.delenv("OTEL_SDK_DISABLED")  # the control: the same config does export
    with otelperf.load(path) as perf:
        emit(perf)
    assert "place-order" in otlp_receiver.span_names()


# --- secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("collector", ["refused", "black_hole"])
def test_secrets_never_reach_the_logs_of_failing_exports(
    tmp_path: Path,
    refused_port: int,
    black_hole: BlackHole,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    collector: str,
    protocol: str,
) -> None:
    """A header token and an endpoint password reach no log line nor stderr when export fails."""
    port = refused_port if collector == "refused" else black_hole.port
    endpoint = f"http://ingest:CANARYPASSWORD@127.0.0.1:{port}"
    telemetry = {
        **otlp(
            endpoint,
            protocol,
            timeout="1500ms",
            headers={"authorization": "Bearer CANARYTOKEN"},
        ),
        **FAST,
        "shutdown_timeout": "1s",
    }
    caplog.set_level(logging.DEBUG)
    perf = otelperf.load(write_config(tmp_path, telemetry))
    perf.start()
    emit(perf)
    before = set(threading.enumerate())
    perf.shutdown()
    # Let the exporters this shutdown abandoned reach their own deadline and log their last word.
    _join_threads(lambda t: t not in before and t.name == "otelperf-shutdown", timeout=5)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert failures, "the failing export logged nothing, so this test proves nothing"
    if _abandoned_warning(caplog):
        assert "ingest:****@127.0.0.1" in logged  # otelperf names the endpoint, masked
    stderr = capfd.readouterr().err
    for secret in ("CANARYPASSWORD", "CANARYTOKEN"):
        assert secret not in logged
        assert secret not in stderr


def _join_threads(predicate: Callable[[threading.Thread], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if predicate(thread):
            thread.join(max(0.0, deadline - time.monotonic()))
