"""The config file's schema: frozen models, unknown keys refused, units parsed at load.

Every section of the file is validated here, including sections whose runtime
lands later, so a config that loads today keeps loading as features arrive.
Field descriptions feed ``otelperf schema`` and the generated ``docs/config.md``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from otelperf.config._units import Duration, Ratio, Size, written

__all__ = [
    "AvailabilityObjective",
    "BatcherConfig",
    "CacheCompression",
    "CacheConfig",
    "CircuitBreaker",
    "Config",
    "DeadLetter",
    "HeaderCapture",
    "HealthConfig",
    "HttpCompression",
    "HttpConfig",
    "LatencyObjective",
    "LogsConfig",
    "MemoryCache",
    "MetricsConfig",
    "OtlpConfig",
    "PoolConfig",
    "ProfilingConfig",
    "ProfilingHook",
    "RedisCache",
    "RetryPolicy",
    "RuntimeConfig",
    "ServiceConfig",
    "SinkConfig",
    "SloConfig",
    "TelemetryConfig",
    "TieredCache",
    "TracesConfig",
]

from otelperf.config._base import SECRET_KEYS as SECRET_KEYS
from otelperf.config._base import _check_names, _Model
from otelperf.config._resources_schema import (
    ON_DEMAND_HOOK as ON_DEMAND_HOOK,
)
from otelperf.config._resources_schema import (
    BatcherConfig as BatcherConfig,
)
from otelperf.config._resources_schema import (
    CacheCompression as CacheCompression,
)
from otelperf.config._resources_schema import (
    CacheConfig as CacheConfig,
)
from otelperf.config._resources_schema import (
    CallableSink as CallableSink,
)
from otelperf.config._resources_schema import (
    CircuitBreaker as CircuitBreaker,
)
from otelperf.config._resources_schema import (
    DeadLetter as DeadLetter,
)
from otelperf.config._resources_schema import (
    JsonlSink as JsonlSink,
)
from otelperf.config._resources_schema import (
    MemoryCache as MemoryCache,
)
from otelperf.config._resources_schema import (
    OnDemandProfiling as OnDemandProfiling,
)
from otelperf.config._resources_schema import (
    PoolConfig as PoolConfig,
)
from otelperf.config._resources_schema import (
    PostgresSink as PostgresSink,
)
from otelperf.config._resources_schema import (
    ProfileEndpoint as ProfileEndpoint,
)
from otelperf.config._resources_schema import (
    ProfilingConfig as ProfilingConfig,
)
from otelperf.config._resources_schema import (
    ProfilingHook as ProfilingHook,
)
from otelperf.config._resources_schema import (
    RedisCache as RedisCache,
)
from otelperf.config._resources_schema import (
    RetryPolicy as RetryPolicy,
)
from otelperf.config._resources_schema import (
    SinkConfig as SinkConfig,
)
from otelperf.config._resources_schema import (
    TieredCache as TieredCache,
)

# --- service -----------------------------------------------------------------


class ServiceConfig(_Model):
    """Who is reporting: becomes the OpenTelemetry Resource."""

    name: str = Field(min_length=1, description="`service.name`.")
    version: str | None = Field(None, description="`service.version`.")
    namespace: str | None = Field(None, description="`service.namespace`.")
    environment: str | None = Field(None, description="`deployment.environment.name`.")
    attributes: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra resource attributes."
    )


# --- telemetry ---------------------------------------------------------------

Exporter = Literal["otlp", "console", "prometheus", "file", "none"]


class OtlpConfig(_Model):
    """Where and how OTLP is sent."""

    endpoint: str = Field(
        "http://localhost:4317",
        description="Collector address. For `http/protobuf`, `/v1/traces` and `/v1/metrics` "
        "are appended unless the path already names the signal.",
    )
    protocol: Literal["grpc", "http/protobuf"] = Field("grpc", description="Transport.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Headers sent with every export (secret: masked)."
    )
    timeout: Duration = Field(
        written("10s"), description="Deadline of one export, retries included."
    )
    compression: Literal["none", "gzip"] = Field("none", description="Payload compression.")
    insecure: bool | None = Field(
        None, description="gRPC without TLS; default: true for `http://` endpoints."
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str) -> str:
        if not re.match(r"^(https?)://[^/\s]+", value):
            raise PydanticCustomError(
                "url",
                "invalid endpoint; expected an http:// or https:// URL such as "
                "http://localhost:4317",
            )
        return value


class FileExportConfig(_Model):
    """OTLP JSON lines written to a local file (one export request per line)."""

    path: str = Field("./otelperf-telemetry.jsonl", description="File to append to.")


class PrometheusConfig(_Model):
    """Prometheus pull endpoint served by the process."""

    host: str = Field("127.0.0.1", description="Address to listen on (use 0.0.0.0 to expose).")
    port: int = Field(9464, ge=0, le=65535, description="Port to listen on (0: any free port).")


class TracesConfig(_Model):
    """Trace sampling and batching."""

    sample_ratio: Ratio = Field(
        written("100%"), description="Share of root traces kept (parent-based)."
    )
    exporter: Exporter | None = Field(None, description="Overrides `telemetry.exporter`.")
    max_queue: int = Field(2048, ge=1, description="Spans buffered before new ones are dropped.")
    max_batch: int = Field(512, ge=1, description="Spans per export.")
    schedule_delay: Duration = Field(
        written("5s"), description="Longest a span waits before export."
    )


class MetricsConfig(_Model):
    """Metric collection."""

    interval: Duration = Field(written("15s"), gt=0, description="Export interval.")
    histograms: Literal["explicit", "exponential"] = Field(
        "explicit",
        description="`explicit`: bucket boundaries chosen by unit (seconds, bytes); "
        "`exponential`: base-2 exponential histograms.",
    )
    exporter: Exporter | None = Field(None, description="Overrides `telemetry.exporter`.")


class LogsConfig(_Model):
    """Log correlation and export."""

    correlation: bool = Field(True, description="Put trace and span ids on log records.")
    export: bool = Field(False, description="Also export stdlib logging records over OTLP.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level exported."
    )


class TelemetryConfig(_Model):
    """OpenTelemetry SDK setup."""

    exporter: Exporter = Field("otlp", description="Where traces and metrics go.")
    otlp: OtlpConfig = Field(default_factory=OtlpConfig)  # type: ignore[arg-type]
    file: FileExportConfig = Field(default_factory=FileExportConfig)  # type: ignore[arg-type]
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)  # type: ignore[arg-type]
    traces: TracesConfig = Field(default_factory=TracesConfig)  # type: ignore[arg-type]
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)  # type: ignore[arg-type]
    logs: LogsConfig = Field(default_factory=LogsConfig)  # type: ignore[arg-type]
    shutdown_timeout: Duration = Field(
        written("5s"),
        gt=0,
        description="Longest shutdown waits to flush telemetry, whatever the collector does.",
    )
    set_global: bool = Field(
        True, description="Install the providers as the OpenTelemetry global providers."
    )
    otel_config_file: str | None = Field(
        None,
        description="A standard OpenTelemetry declarative config file used as is for the "
        "providers; `exporter`, `otlp`, `file`, `prometheus`, `traces` and `metrics` must "
        'then be left out. Needs `pip install "otelperf[otelconfig]"`.',
    )

    @model_validator(mode="after")
    def _otel_file_is_exclusive(self) -> TelemetryConfig:
        if self.otel_config_file is not None:
            clash = sorted(
                {"exporter", "otlp", "file", "prometheus", "traces", "metrics"}
                & self.model_fields_set
            )
            if clash:
                raise PydanticCustomError(
                    "exclusive",
                    "otel_config_file replaces {keys}; remove them or remove otel_config_file",
                    {"keys": ", ".join(clash)},
                )
        if self.traces.exporter == "prometheus":
            raise PydanticCustomError(
                "exporter",
                "{signal}.exporter cannot be prometheus (it serves metrics only); "
                "use otlp, console, file or none",
                {"signal": "traces"},
            )
        return self


# --- http --------------------------------------------------------------------


class HeaderCapture(_Model):
    """Headers recorded on server spans, by lower-case name; sensitive values are redacted."""

    request: list[str] = Field(default_factory=list)
    response: list[str] = Field(default_factory=list)


class LatencyObjective(_Model):
    threshold: Duration = Field(description="A request slower than this is bad.")
    target: Ratio = Field(description="Share of requests that must be good, e.g. 99%.")


class AvailabilityObjective(_Model):
    target: Ratio = Field(description="Share of requests that must not be 5xx, e.g. 99.9%.")


class SloConfig(_Model):
    """Service level objectives, counted per route and for the service."""

    latency: LatencyObjective | None = None
    availability: AvailabilityObjective | None = None
    window: Duration = Field(written("28d"), gt=0, description="Compliance window.")


class HttpCompression(_Model):
    """Response compression honouring Accept-Encoding."""

    enabled: bool = True
    algorithms: list[Literal["zstd", "br", "gzip"]] = Field(
        default_factory=lambda: ["zstd", "br", "gzip"],  # type: ignore[arg-type]
        description="Preference order; zstd and br are used only when installed.",
    )
    min_size: Size = Field(500, description="Smaller responses are sent as they are.")
    level: int = Field(6, ge=1, le=9, description="gzip level.")


class HttpConfig(_Model):
    """The ASGI middleware."""

    exclude: list[str] = Field(
        default_factory=list,
        description="Paths kept out of traces and metrics: exact, or globs anchored at the start.",
    )
    capture_headers: HeaderCapture = Field(default_factory=HeaderCapture)
    slo: SloConfig | None = None
    compression: HttpCompression | None = None


class RuntimeConfig(_Model):
    event_loop_lag: bool = True
    process: bool = True
    disk_paths: list[str] = Field(default_factory=list)


class HealthConfig(_Model):
    liveness: str | None = "/healthz"
    readiness: str | None = "/readyz"
    timeout: Duration = Field(written("2s"), gt=0, description="Deadline of each readiness check.")


# --- the file ----------------------------------------------------------------


class Config(_Model):
    """An otelperf config file."""

    version: Literal[1] = Field(description="Format version; always 1 for now.")
    service: ServiceConfig = Field(description="Identity of the service (the Resource).")
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,  # type: ignore[arg-type]
        description="Exporters, sampling, metric collection, shutdown bound.",
    )
    http: HttpConfig = Field(
        default_factory=HttpConfig,
        description="The ASGI middleware: exclusions, captured headers, SLOs, compression.",
    )
    caches: dict[str, CacheConfig] = Field(
        default_factory=dict, description="Named caches (memory, redis or tiered)."
    )
    pools: dict[str, PoolConfig] = Field(
        default_factory=dict, description="Named PostgreSQL connection pools."
    )
    batchers: dict[str, BatcherConfig] = Field(
        default_factory=dict, description="Named write batchers."
    )
    profiling: ProfilingConfig = Field(
        default_factory=ProfilingConfig,  # type: ignore[arg-type]
        description="Profiling hooks and where profiles are kept.",
    )
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig,
        description="Process, system and event-loop metrics.",
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig,  # type: ignore[arg-type]
        description="Liveness and readiness endpoints.",
    )

    @field_validator("caches", "pools", "batchers")
    @classmethod
    def _names(cls, value: dict[str, object]) -> dict[str, object]:
        _check_names(value, "resource")
        return value
