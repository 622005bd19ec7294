"""The config file's schema: frozen models, unknown keys refused, units parsed at load.

Every section of the file is validated here, including sections whose runtime
lands later, so a config that loads today keeps loading as features arrive.
Field descriptions feed ``otelperf schema`` and the generated ``docs/config.md``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
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

SECRET_KEYS = frozenset(
    {"conninfo", "url", "headers", "signing_key", "token", "password", "dsn", "api_key"}
)
"""Keys whose values are never shown: not by ``otelperf check``, not in error messages."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _check_names(names: dict[str, object], what: str) -> None:
    for name in names:
        if not _NAME.fullmatch(name):
            raise PydanticCustomError(
                "name",
                "invalid {what} name {shown}; use letters, digits, '_', '-' or '.', "
                "starting with a letter or '_'",
                {"what": what, "name": name, "shown": repr(name)},
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
        for signal, chosen in (("traces", self.traces.exporter),):
            if chosen == "prometheus":
                raise PydanticCustomError(
                    "exporter",
                    "{signal}.exporter cannot be prometheus (it serves metrics only); "
                    "use otlp, console, file or none",
                    {"signal": signal},
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


# --- caches ------------------------------------------------------------------


class CacheCompression(_Model):
    algorithm: Literal["zlib", "zstd"] = "zlib"
    min_size: Size = Field(1024, description="Values smaller than this are stored as they are.")


class CircuitBreaker(_Model):
    failures: int = Field(5, ge=1, description="Consecutive failures that open the breaker.")
    cooldown: Duration = Field(
        written("5s"), gt=0, description="How long the backend is skipped once open."
    )


class _CacheBase(_Model):
    ttl: Duration = Field(written("5m"), gt=0, description="Time to live of an entry.")
    ttl_jitter: Ratio = Field(
        written("0%"), description="Random share added to each TTL, e.g. 10%."
    )
    namespace: str = Field("otelperf", description="First part of every key.")
    version: str = Field("1", description="Bump to invalidate every entry at once.")
    stampede: Literal["none", "single_flight", "lock", "early"] = Field(
        "single_flight", description="How concurrent misses for one key are collapsed."
    )
    stale_while_revalidate: Duration | None = Field(
        None, description="Serve an expired entry this long while one caller refreshes it."
    )
    serializer: Literal["json", "msgpack", "pickle"] = "json"
    signing_key: str | None = Field(
        None, description="HMAC-SHA256 key; required by the pickle serializer (secret)."
    )
    compression: CacheCompression | None = None
    spans: bool = Field(False, description="Spans even for in-memory hits.")
    record_keys: bool = Field(
        False, description="Record cache keys on spans (may be personal data)."
    )

    @model_validator(mode="after")
    def _pickle_needs_key(self) -> _CacheBase:
        if self.serializer == "pickle" and not self.signing_key:
            raise PydanticCustomError(
                "signing",
                "serializer pickle needs signing_key (unsigned pickles from shared storage "
                "would run arbitrary code); set signing_key or use json or msgpack",
            )
        return self


class MemoryCache(_CacheBase):
    """In-process LRU with TTL."""

    backend: Literal["memory"]
    max_entries: int = Field(10_000, ge=1)

    @model_validator(mode="after")
    def _no_lock_in_memory(self) -> MemoryCache:
        if self.stampede == "lock":
            raise PydanticCustomError(
                "stampede",
                "stampede lock needs a shared backend (redis or tiered); a memory cache "
                "can use none, single_flight or early",
            )
        return self


class _RedisOptions(_Model):
    url: str = Field(
        min_length=1, description="redis:// or rediss:// URL (secret: password masked)."
    )
    pool_size: int = Field(50, ge=1)
    timeout: Duration = Field(
        written("250ms"), gt=0, description="Per-operation deadline; then fail open."
    )
    connect_timeout: Duration = Field(written("250ms"), gt=0)
    breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)  # type: ignore[arg-type]

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not re.match(r"^(redis|rediss|unix)://", value):
            raise PydanticCustomError(
                "url",
                "invalid Redis URL; expected redis://host:port/db, rediss://... or unix://...",
            )
        return value


class RedisCache(_CacheBase, _RedisOptions):
    """Redis shared by every process."""

    backend: Literal["redis"]


class TieredCache(_CacheBase, _RedisOptions):
    """A memory L1 in front of Redis L2."""

    backend: Literal["tiered"]
    l1_ttl: Duration = Field(written("5s"), gt=0, description="TTL of the in-process copy.")
    l1_max_entries: int = Field(10_000, ge=1)


CacheConfig = Annotated[MemoryCache | RedisCache | TieredCache, Field(discriminator="backend")]


# --- pools -------------------------------------------------------------------


class PoolConfig(_Model):
    """A psycopg_pool pool, with defaults safer than the library's for web services."""

    conninfo: str = Field(
        min_length=1, description="libpq connection string or URL (secret: password masked)."
    )
    min_size: int = Field(2, ge=0)
    max_size: int = Field(10, ge=1)
    timeout: Duration = Field(written("5s"), gt=0, description="Longest a checkout waits.")
    max_waiting: int = Field(
        100, ge=0, description="Callers allowed to queue before failing fast (0: unbounded)."
    )
    max_lifetime: Duration = Field(written("1h"), gt=0)
    max_idle: Duration = Field(written("10m"), gt=0)
    reconnect_timeout: Duration = Field(written("5m"), gt=0)
    num_workers: int = Field(3, ge=1)
    check: bool = Field(True, description="Check each connection on checkout.")
    open: Literal["eager", "lazy"] = Field("eager", description="Open at startup or on first use.")
    settings: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Session settings, e.g. statement_timeout, application_name.",
    )
    record_statements: bool = Field(False, description="Sanitized query text on spans.")
    exhausted_status: int | None = Field(
        None, ge=500, le=599, description="HTTP status for a request that found the pool exhausted."
    )

    @model_validator(mode="after")
    def _sizes(self) -> PoolConfig:
        if self.max_size < self.min_size:
            raise PydanticCustomError(
                "sizes",
                "max_size ({max_size}) must be greater or equal than min_size ({min_size})",
                {"max_size": self.max_size, "min_size": self.min_size},
            )
        return self


# --- batchers ----------------------------------------------------------------


class CallableSink(_Model):
    path: str = Field(description="Import path `module:function`, called with a list of items.")

    @field_validator("path")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value):
            raise PydanticCustomError(
                "import_path",
                "invalid import path {found}; expected 'package.module:function'",
                {"found": repr(value)},
            )
        return value


class PostgresSink(_Model):
    pool: str = Field(description="Name of a declared pool.")
    table: str
    columns: list[str] = Field(min_length=1)


class JsonlSink(_Model):
    path: str


class SinkConfig(_Model):
    """Exactly one of `callable`, `postgres`, `jsonl`."""

    callable: CallableSink | None = None
    postgres: PostgresSink | None = None
    jsonl: JsonlSink | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SinkConfig:
        chosen = [k for k in ("callable", "postgres", "jsonl") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise PydanticCustomError(
                "sink",
                "a sink needs exactly one of callable, postgres or jsonl; found {found}",
                {"found": ", ".join(chosen) or "none"},
            )
        return self


class RetryPolicy(_Model):
    attempts: int = Field(5, ge=1)
    backoff: Duration = Field(written("100ms"), ge=0)
    max_backoff: Duration = Field(written("10s"), ge=0)
    jitter: bool = True


class DeadLetter(_Model):
    path: str = Field(description="JSON-lines file receiving items that could not be written.")


class BatcherConfig(_Model):
    """Groups writes and flushes them by size or age."""

    max_size: int = Field(500, ge=1)
    max_wait: Duration = Field(written("2s"), gt=0)
    max_queue: int = Field(100_000, ge=1)
    on_full: Literal["block", "drop_oldest", "drop_newest", "raise"] = "block"
    block_timeout: Duration = Field(
        written("5s"), gt=0, description="Longest `put` blocks when full."
    )
    concurrency: int = Field(1, ge=1, description="Flushes in flight (1 keeps order).")
    sink: SinkConfig
    retry: RetryPolicy = Field(default_factory=RetryPolicy)  # type: ignore[arg-type]
    dead_letter: DeadLetter | None = None
    shutdown_deadline: Duration = Field(written("10s"), gt=0)

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> BatcherConfig:
        if self.max_queue < self.max_size:
            raise PydanticCustomError(
                "sizes",
                "max_queue ({max_queue}) must be greater or equal than max_size ({max_size})",
                {"max_queue": self.max_queue, "max_size": self.max_size},
            )
        return self


# --- profiling, runtime, health ----------------------------------------------


class ProfilingHook(_Model):
    """Selects requests (by route glob) or a function (`module:qualname`) to profile."""

    name: str | None = None
    route: str | None = None
    function: str | None = None
    sample_rate: Ratio = Field(written("100%"))
    min_duration: Duration = Field(written("0s"))
    engine: Literal["pyinstrument", "cprofile"] = "pyinstrument"
    keep: int = Field(20, ge=1, description="Profiles kept for this hook.")

    @model_validator(mode="after")
    def _one_target(self) -> ProfilingHook:
        if (self.route is None) == (self.function is None):
            raise PydanticCustomError(
                "hook", "a profiling hook needs exactly one of route or function"
            )
        return self


class OnDemandProfiling(_Model):
    header: str = "x-otelperf-profile"
    token: str = Field(min_length=16, description="Shared secret; at least 16 characters.")


class ProfileEndpoint(_Model):
    enabled: bool = False
    path: str = "/_otelperf/profiles"


class ProfilingConfig(_Model):
    output_dir: str = "./profiles"
    max_total_size: Size = Field(written("100MiB"))
    hooks: list[ProfilingHook] = Field(default_factory=list)
    on_demand: OnDemandProfiling | None = None
    endpoint: ProfileEndpoint = Field(default_factory=ProfileEndpoint)

    @model_validator(mode="after")
    def _endpoint_needs_token(self) -> ProfilingConfig:
        if self.endpoint.enabled and self.on_demand is None:
            raise PydanticCustomError(
                "endpoint", "endpoint.enabled needs on_demand.token, which guards the endpoint"
            )
        return self


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
