"""Build the OpenTelemetry SDK from the ``service`` and ``telemetry`` sections, and shut it down
within a bound whatever the collector does.

This is the one module that builds providers and exporters; everything else in
otelperf talks to the OpenTelemetry API only.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import functools
import json
import logging
import os
import platform
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics._internal.aggregation import (
    _DEFAULT_EXPLICIT_BUCKET_HISTOGRAM_AGGREGATION_BOUNDARIES as _SDK_DEFAULT_BOUNDARIES,
)
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import (
    Aggregation,
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otelperf import _instruments
from otelperf._errors import ConfigError, ConfigProblem, MissingDependencyError, OtelperfError
from otelperf._histograms import (
    ApiHistogram,
    FastHistogram,
    HistogramRecorder,
    Registry,
    SdkHistogram,
    attach,
    cumulative_histograms,
)
from otelperf._instruments import BYTES_BUCKETS, SECONDS_BUCKETS
from otelperf._logs import export_logs, install_correlation
from otelperf._redact import redact_text
from otelperf._version import __version__
from otelperf.config._schema import Config, OtlpConfig

__all__ = [
    "BYTES_BUCKETS",
    "SECONDS_BUCKETS",
    "Telemetry",
    "build_resource",
    "build_telemetry",
]

_log = logging.getLogger("otelperf.telemetry")

# The SDK's own default boundaries (0 to 10,000), for units nothing better fits.
_SDK_DEFAULT_BUCKETS: tuple[float, ...] = tuple(_SDK_DEFAULT_BOUNDARIES)

_UNIT_BUCKETS: dict[str, tuple[float, ...]] = {
    "s": SECONDS_BUCKETS,
    "ms": tuple(b * 1000 for b in SECONDS_BUCKETS),
    "us": tuple(b * 1_000_000 for b in SECONDS_BUCKETS),
    "By": BYTES_BUCKETS,
}


class _BucketsByUnit(Aggregation):
    """Explicit buckets chosen by the instrument's unit, unless it advises its own.

    The SDK's default boundaries (0 to 10,000) suit milliseconds, so a histogram
    in seconds would put every request in its first two buckets.
    """

    def _create_aggregation(
        self,
        instrument: Any,
        attributes: Any,
        reservoir_factory: Any,
        start_time_unix_nano: int,
    ) -> Any:
        advisory = getattr(instrument, "_advisory", None)
        boundaries = getattr(advisory, "explicit_bucket_boundaries", None)
        if boundaries is None:
            boundaries = _UNIT_BUCKETS.get(instrument.unit)
        return ExplicitBucketHistogramAggregation(boundaries)._create_aggregation(
            instrument, attributes, reservoir_factory, start_time_unix_nano
        )


def buckets_for(spec: _instruments.InstrumentSpec) -> tuple[float, ...]:
    """The explicit boundaries a histogram gets: its advice, else its unit's, else the SDK's."""
    return spec.buckets or _UNIT_BUCKETS.get(spec.unit, _SDK_DEFAULT_BUCKETS)


def build_resource(config: Config) -> Resource:
    """The Resource describing this service; file values win over ``OTEL_RESOURCE_ATTRIBUTES``."""
    service = config.service
    attributes: dict[str, Any] = dict(service.attributes)
    attributes["service.name"] = service.name
    for key, value in (
        ("service.version", service.version),
        ("service.namespace", service.namespace),
        ("deployment.environment.name", service.environment),
    ):
        if value is not None:
            attributes[key] = value
    # Built at startup in each worker process, so every worker is told apart.
    attributes.setdefault("service.instance.id", str(uuid.uuid4()))
    attributes.setdefault("process.pid", os.getpid())
    attributes.setdefault("process.runtime.name", sys.implementation.name)
    attributes.setdefault("process.runtime.version", platform.python_version())
    return Resource.create(attributes)


# --- file exporter: OTLP JSON lines --------------------------------------------


def _hex_ids(value: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON uses base64."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(item, str):
                out[key] = base64.b64decode(item).hex()
            else:
                out[key] = _hex_ids(item)
        return out
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


class _JsonLines:
    """One file shared by the span and metric exporters; a line per export request."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def write(self, message: Any) -> bool:
        from google.protobuf.json_format import MessageToDict

        line = json.dumps(_hex_ids(MessageToDict(message, use_integers_for_enums=True)))
        try:
            with self._lock:
                if self._file is None:
                    parent = os.path.dirname(os.path.abspath(self.path))
                    os.makedirs(parent, exist_ok=True)
                    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
                self._file.write(line + "\n")
                self._file.flush()
        except OSError as exc:
            _log.warning("cannot write telemetry to %s: %s", self.path, exc)
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class _JsonLinesSpanExporter(SpanExporter):
    def __init__(self, sink: _JsonLines) -> None:
        self._sink = sink

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        ok = self._sink.write(encode_spans(spans))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._sink.close()


class _JsonLinesMetricExporter(MetricExporter):
    def __init__(self, sink: _JsonLines) -> None:
        super().__init__()
        self._sink = sink

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        ok = self._sink.write(encode_metrics(metrics_data))
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._sink.close()


class _JsonLinesLogExporter:
    """Log records as OTLP JSON lines, beside spans and metrics."""

    def __init__(self, sink: _JsonLines) -> None:
        self._sink = sink

    def export(self, batch: Sequence[Any]) -> Any:
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        ok = self._sink.write(encode_logs(batch))
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._sink.close()


# --- OTLP ----------------------------------------------------------------------


def _signal_url(endpoint: str, signal: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(f"/v1/{signal}") else f"{endpoint}/v1/{signal}"


def _endpoint_and_headers(otlp: OtlpConfig) -> tuple[str, dict[str, str] | None]:
    """The endpoint without ``user:password@``, and the headers to send, keys lower-cased.

    Credentials in the URL become a Basic ``authorization`` header (unless one is
    configured): the gRPC exporter would otherwise take ``user:password@host`` for a
    host name, fail every export, and log the password with each failure. gRPC
    refuses upper-case metadata keys, and HTTP header names are case-insensitive,
    so keys are lower-cased for both.
    """
    headers = {key.lower(): value for key, value in otlp.headers.items()}
    parts = urllib.parse.urlsplit(otlp.endpoint)
    if "@" not in parts.netloc:
        return otlp.endpoint, headers or None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    if "authorization" not in headers:
        credentials = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
        token = base64.b64encode(credentials.encode()).decode("ascii")
        headers["authorization"] = f"Basic {token}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), headers


# (gRPC module, HTTP module, exporter class) per signal; imported only when used.
_OTLP_EXPORTERS = {
    "traces": ("trace_exporter", "trace_exporter", "OTLPSpanExporter"),
    "metrics": ("metric_exporter", "metric_exporter", "OTLPMetricExporter"),
    "logs": ("_log_exporter", "_log_exporter", "OTLPLogExporter"),
}


def _otlp_exporter(otlp: OtlpConfig, signal: str) -> Any:
    """The official OTLP exporter of ``signal`` over the configured protocol."""
    import importlib

    grpc_module, http_module, class_name = _OTLP_EXPORTERS[signal]
    endpoint, headers = _endpoint_and_headers(otlp)
    gzip = otlp.compression == "gzip"
    if otlp.protocol == "grpc":
        from grpc import Compression as GrpcCompression

        module = importlib.import_module(f"opentelemetry.exporter.otlp.proto.grpc.{grpc_module}")
        return getattr(module, class_name)(
            endpoint=endpoint,
            insecure=_insecure(otlp),
            headers=headers,
            timeout=otlp.timeout,
            compression=GrpcCompression.Gzip if gzip else None,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression

    module = importlib.import_module(f"opentelemetry.exporter.otlp.proto.http.{http_module}")
    return getattr(module, class_name)(
        endpoint=_signal_url(endpoint, signal),
        headers=headers,
        timeout=otlp.timeout,
        compression=Compression.Gzip if gzip else Compression.NoCompression,
    )


def _insecure(otlp: OtlpConfig) -> bool:
    return otlp.insecure if otlp.insecure is not None else otlp.endpoint.startswith("http://")


# --- the whole SDK ---------------------------------------------------------------


@dataclass
class Telemetry:
    """The providers otelperf reports through, and how to shut them down.

    ``owned`` is false when the application supplied its providers: otelperf then
    never shuts them down.
    """

    tracer_provider: trace_api.TracerProvider
    meter_provider: metrics_api.MeterProvider
    owned: bool
    shutdown_timeout: float
    description: str
    closers: list[Callable[[], None]] = field(default_factory=list)
    fast: Registry | None = None
    """Plain-Python histograms served to every reader, when all readers can take them."""
    _done: bool = False

    def histogram(self, meter: metrics_api.Meter, name: str) -> HistogramRecorder:
        """A recorder for the registered histogram ``name``: fast when possible."""
        if self.fast is not None:
            return self._fast_histogram(_instruments.spec(name))
        return SdkHistogram(_instruments.create(meter, name))

    def api_histogram(self, spec: _instruments.InstrumentSpec) -> ApiHistogram:
        """The fast histogram of ``spec`` behind the API's ``record(amount, attributes)``."""
        return ApiHistogram(self._fast_histogram(spec))

    def _fast_histogram(self, spec: _instruments.InstrumentSpec) -> FastHistogram:
        if self.fast is None:
            raise OtelperfError("these providers have no plain-Python histograms")
        return self.fast.histogram(spec.name, spec.unit, spec.description, buckets_for(spec))

    def _shutdown_calls(self) -> list[Callable[[], Any]]:
        calls: list[Callable[[], Any]] = []
        if self.owned:
            timeout_ms = int(self.shutdown_timeout * 1000)
            tracer_shutdown = getattr(self.tracer_provider, "shutdown", None)
            meter_shutdown = getattr(self.meter_provider, "shutdown", None)
            if tracer_shutdown is not None:
                calls.append(tracer_shutdown)
            if meter_shutdown is not None:
                calls.append(lambda: meter_shutdown(timeout_millis=timeout_ms))
        calls.extend(self.closers)
        return calls

    def shutdown(self) -> bool:
        """Flush and close, waiting at most ``shutdown_timeout``; True when all finished.

        Each provider shuts down in its own daemon thread: an exporter stuck on a
        collector that accepts and never answers is abandoned at the deadline
        (its telemetry is lost, and a warning says so) instead of holding the
        process for the SDK's 30 s.
        """
        if self._done:
            return True
        self._done = True
        # Once shut down there is nothing left for the exit hook to do; dropping it
        # also frees the providers (and their exporters) of a process that builds many.
        atexit.unregister(self.shutdown)
        deadline = time.monotonic() + self.shutdown_timeout
        threads = [
            threading.Thread(target=_logged(call), name="otelperf-shutdown", daemon=True)
            for call in self._shutdown_calls()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(thread.is_alive() for thread in threads)
        if not finished:
            _log.warning(
                "telemetry shutdown did not finish within %.1fs (telemetry.shutdown_timeout); "
                "unsent telemetry to %s was dropped",
                self.shutdown_timeout,
                self.description,
            )
        return finished

    async def ashutdown(self) -> bool:
        """:meth:`shutdown` without blocking the event loop while it waits."""
        if self._done:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()

        def run() -> None:
            try:
                result = self.shutdown()
            except BaseException:  # the awaiting side must be answered whatever happens
                _log.warning("error while shutting down telemetry", exc_info=True)
                result = False
            # RuntimeError: the loop closed while we waited (a cancelled lifespan);
            # nobody awaits the result any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, result)

        # A daemon thread, not the loop's executor: executor threads are joined at
        # interpreter exit, which would bring back the unbounded wait.
        threading.Thread(target=run, name="otelperf-ashutdown", daemon=True).start()
        return await future


def _resolve(future: asyncio.Future[bool], result: bool) -> None:
    if not future.done():  # the awaiting task may have been cancelled meanwhile
        future.set_result(result)


def _logged(call: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            call()
        except Exception:
            _log.warning("error while shutting down telemetry", exc_info=True)

    return run


def build_telemetry(
    config: Config,
    *,
    tracer_provider: trace_api.TracerProvider | None = None,
    meter_provider: metrics_api.MeterProvider | None = None,
    metric_readers: Sequence[MetricReader] = (),
    span_processors: Sequence[SpanProcessor] = (),
    config_path: str | None = None,
) -> Telemetry:
    """Create the providers a config describes, or adopt the application's own.

    ``metric_readers`` and ``span_processors`` are added to the providers otelperf
    builds (the testing helper passes in-memory ones). Precedence: values in the
    file win; where the file is silent the official exporters read their
    ``OTEL_EXPORTER_OTLP_*`` variables (certificates, for instance);
    ``OTEL_SDK_DISABLED=true`` turns every exporter off.
    """
    telemetry = config.telemetry
    if tracer_provider is not None or meter_provider is not None:
        return Telemetry(
            tracer_provider=tracer_provider or trace_api.get_tracer_provider(),
            meter_provider=meter_provider or metrics_api.get_meter_provider(),
            owned=False,
            shutdown_timeout=telemetry.shutdown_timeout,
            description="the application's providers",
        )
    if telemetry.otel_config_file is not None:
        built = _from_otel_config_file(
            telemetry.otel_config_file,
            config_path,
            telemetry.shutdown_timeout,
            metric_readers,
            span_processors,
        )
    else:
        built = _from_config(config, metric_readers, span_processors)
    if telemetry.set_global:
        trace_api.set_tracer_provider(built.tracer_provider)
        metrics_api.set_meter_provider(built.meter_provider)
    atexit.register(built.shutdown)
    return built


def _disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _from_config(
    config: Config, metric_readers: Sequence[MetricReader], span_processors: Sequence[SpanProcessor]
) -> Telemetry:
    telemetry = config.telemetry
    resource = build_resource(config)
    closers: list[Callable[[], None]] = []
    sink: _JsonLines | None = None

    def file_sink() -> _JsonLines:
        nonlocal sink
        if sink is None:
            sink = _JsonLines(telemetry.file.path)
        return sink

    off = _disabled()
    trace_kind = "none" if off else (telemetry.traces.exporter or telemetry.exporter)
    if trace_kind == "prometheus":
        trace_kind = "none"  # prometheus carries metrics only; traces need their own exporter
    metric_kind = "none" if off else (telemetry.metrics.exporter or telemetry.exporter)

    tracer_provider = TracerProvider(
        resource=resource,
        sampler=ParentBased(TraceIdRatioBased(telemetry.traces.sample_ratio)),
        shutdown_on_exit=False,
    )
    span_exporter: SpanExporter | None = None
    if trace_kind == "otlp":
        span_exporter = _otlp_exporter(telemetry.otlp, "traces")
    elif trace_kind == "console":
        # sys.stdout as it is now: the SDK's default is bound when the SDK is imported,
        # so redirect_stdout (and test capture) would never see the output.
        span_exporter = ConsoleSpanExporter(out=sys.stdout)
    elif trace_kind == "file":
        span_exporter = _JsonLinesSpanExporter(file_sink())
    if span_exporter is not None:
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                span_exporter,
                max_queue_size=telemetry.traces.max_queue,
                max_export_batch_size=min(telemetry.traces.max_batch, telemetry.traces.max_queue),
                schedule_delay_millis=telemetry.traces.schedule_delay * 1000,
                export_timeout_millis=telemetry.otlp.timeout * 1000,
            )
        )
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)

    readers = list(metric_readers)
    interval_ms = telemetry.metrics.interval * 1000
    if metric_kind == "prometheus":
        readers.append(_prometheus_reader(config, closers))
    elif metric_kind != "none":
        metric_exporter: MetricExporter
        if metric_kind == "otlp":
            metric_exporter = _otlp_exporter(telemetry.otlp, "metrics")
        elif metric_kind == "console":
            metric_exporter = ConsoleMetricExporter(out=sys.stdout)
        else:
            metric_exporter = _JsonLinesMetricExporter(file_sink())
        readers.append(
            PeriodicExportingMetricReader(
                metric_exporter,
                export_interval_millis=interval_ms,
                export_timeout_millis=telemetry.otlp.timeout * 1000,
            )
        )
    histogram: Aggregation = (
        ExponentialBucketHistogramAggregation()
        if telemetry.metrics.histograms == "exponential"
        else _BucketsByUnit()
    )
    meter_provider = MeterProvider(
        metric_readers=readers,
        resource=resource,
        views=[View(instrument_type=Histogram, aggregation=histogram)],
        shutdown_on_exit=False,
    )
    fast: Registry | None = None
    if telemetry.metrics.histograms == "explicit" and all(
        cumulative_histograms(r) for r in readers
    ):
        fast = Registry(InstrumentationScope("otelperf", __version__))
        for reader in readers:
            attach(reader, fast, resource)
    logs = telemetry.logs
    if logs.export and trace_kind != "none":  # logs go where traces go
        if trace_kind == "otlp":
            log_exporter = _otlp_exporter(telemetry.otlp, "logs")
        elif trace_kind == "console":
            from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

            log_exporter = ConsoleLogRecordExporter(out=sys.stdout)
        else:
            log_exporter = _JsonLinesLogExporter(file_sink())
        closers.append(export_logs(log_exporter, resource, logs.level))
    if logs.correlation:
        closers.append(install_correlation(tracer_provider))
    return Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        owned=True,
        shutdown_timeout=telemetry.shutdown_timeout,
        description=_describe(trace_kind, metric_kind, config),
        closers=closers,
        fast=fast,
    )


def _describe(trace_kind: str, metric_kind: str, config: Config) -> str:
    def one(kind: str) -> str:
        if kind == "otlp":
            otlp = config.telemetry.otlp
            return f"otlp {otlp.protocol} {redact_text(otlp.endpoint)}"
        if kind == "file":
            return f"file {config.telemetry.file.path}"
        if kind == "prometheus":
            prom = config.telemetry.prometheus
            return f"prometheus http://{prom.host}:{prom.port}/metrics"
        return kind

    if trace_kind == metric_kind:
        return one(trace_kind)
    return f"traces: {one(trace_kind)}, metrics: {one(metric_kind)}"


def _prometheus_reader(config: Config, closers: list[Callable[[], None]]) -> MetricReader:
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise MissingDependencyError(
            "opentelemetry-exporter-prometheus", "prometheus", "telemetry.exporter: prometheus"
        ) from exc
    prom = config.telemetry.prometheus
    # The server first: if it cannot listen, no collector is left registered in
    # prometheus_client's global registry.
    try:
        server, thread = start_http_server(prom.port, addr=prom.host)
    except OSError as exc:
        raise OtelperfError(
            f"telemetry.prometheus: cannot listen on {prom.host}:{prom.port} "
            f"({exc.strerror or exc}); choose another port, or 0 for any free one"
        ) from None
    reader = PrometheusMetricReader()

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(1.0)

    closers.append(close)
    return reader


def _from_otel_config_file(
    path: str,
    config_path: str | None,
    timeout: float,
    metric_readers: Sequence[MetricReader],
    span_processors: Sequence[SpanProcessor],
) -> Telemetry:
    try:
        from opentelemetry.configuration import load_config_file
        from opentelemetry.configuration._meter_provider import create_meter_provider
        from opentelemetry.configuration._resource import create_resource
        from opentelemetry.configuration._tracer_provider import create_tracer_provider
    except ImportError as exc:
        raise MissingDependencyError(
            "opentelemetry-configuration", "otelconfig", "telemetry.otel_config_file"
        ) from exc
    if config_path is not None and not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.abspath(config_path)), path)
    try:
        model = load_config_file(path)
    except Exception as exc:  # the loader raises several types; all mean "bad file"
        raise ConfigError(
            [ConfigProblem(path, 0, 0, "telemetry.otel_config_file", redact_text(str(exc)))]
        ) from None
    if model.disabled:
        # What the SDK's own configure_sdk does for `disabled: true`: no SDK at all.
        return Telemetry(
            tracer_provider=trace_api.NoOpTracerProvider(),
            meter_provider=metrics_api.NoOpMeterProvider(),
            owned=True,
            shutdown_timeout=timeout,
            description=f"nothing ({path} has disabled: true)",
        )
    resource = create_resource(model.resource)
    tracer_provider = create_tracer_provider(
        model.tracer_provider, resource, model.attribute_limits
    )
    meter_provider = create_meter_provider(model.meter_provider, resource)
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    closers: list[Callable[[], None]] = []
    for reader in metric_readers:
        meter_provider.add_metric_reader(reader)
        # MeterProvider.shutdown only shuts down the readers it was created with.
        closers.append(functools.partial(reader.shutdown, timeout_millis=timeout * 1000))
    return Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        owned=True,
        shutdown_timeout=timeout,
        description=f"the providers of {path}",
        closers=closers,
    )
