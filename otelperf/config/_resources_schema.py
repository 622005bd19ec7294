"""Config models of the resources: caches, pools, batchers and profiling hooks."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from otelperf.config._base import _NAME, _Model
from otelperf.config._units import Duration, Ratio, Size, written

# --- caches ------------------------------------------------------------------


_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
"""``module:name`` as callable sinks and profiled functions are named."""


class CacheCompression(_Model):
    """Compression of values stored in Redis (memory caches keep the objects themselves)."""

    algorithm: Literal["zlib", "zstd"] = Field(
        "zlib",
        description="zlib (standard library) or zstd (needs the `compression` extra).",
    )
    min_size: Size = Field(1024, description="Values smaller than this are stored as they are.")
    level: int | None = Field(
        None, ge=-7, le=22, description="Compression level; default: the algorithm's own default."
    )


class CircuitBreaker(_Model):
    """Skips Redis after repeated failures, then lets one call probe it."""

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
    xfetch_beta: float = Field(
        1.0,
        gt=0,
        description="XFetch beta for `stampede: early`: above 1 recomputes earlier, below 1 later.",
    )
    spans: bool = Field(False, description="Spans even for in-memory hits.")
    span_threshold: Duration = Field(
        written("0s"),
        description="Redis reads and writes that succeed faster than this get no span (their "
        "metrics are kept); 0s gives each Redis operation under a sampled request a span.",
    )
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
    connect_timeout: Duration = Field(
        written("250ms"), gt=0, description="Deadline of opening one connection."
    )
    lock_ttl: Duration = Field(
        written("10s"),
        gt=0,
        description="`stampede: lock`: longest one caller holds the fleet-wide recompute lock.",
    )
    lock_wait: Duration = Field(
        written("1s"),
        gt=0,
        description="`stampede: lock`: how long the other callers wait for the new value "
        "before calling the origin themselves.",
    )
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
    min_size: int = Field(2, ge=0, description="Connections kept open even when idle.")
    max_size: int = Field(10, ge=1, description="Most connections open at once.")
    timeout: Duration = Field(written("5s"), gt=0, description="Longest a checkout waits.")
    max_waiting: int = Field(
        100, ge=0, description="Callers allowed to queue before failing fast (0: unbounded)."
    )
    max_lifetime: Duration = Field(
        written("1h"), gt=0, description="A connection older than this is replaced when returned."
    )
    max_idle: Duration = Field(
        written("10m"), gt=0, description="Connections above min_size idle this long are closed."
    )
    reconnect_timeout: Duration = Field(
        written("5m"),
        gt=0,
        description="How long the pool keeps retrying a connection that cannot be made.",
    )
    connect_timeout: Duration = Field(
        written("10s"),
        ge=2,
        description="Longest one connection attempt may take (libpq's default waits forever; "
        "psycopg's 130s).",
    )
    num_workers: int = Field(3, ge=1, description="Background tasks that open connections.")
    check: bool = Field(
        True,
        description="Check each connection on checkout: a socket probe (no round trip) every "
        "time, and a round trip for connections idle longer than `check_idle`; a dead one is "
        "replaced before the caller sees it.",
    )
    check_idle: Duration = Field(
        written("30s"),
        ge=0,
        description="With `check`: idle time after which a checkout also pays a round trip "
        "(0: every checkout).",
    )
    open: Literal["eager", "lazy"] = Field(
        "eager",
        description="`eager`: open at startup and wait for min_size connections (startup fails "
        "if the server cannot be reached within `timeout`); `lazy`: open on first use.",
    )
    settings: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Session settings, e.g. statement_timeout, application_name.",
    )
    record_statements: bool = Field(
        False, description="Sanitized query text (every literal replaced by `?`) on spans."
    )
    exhausted_status: int | None = Field(
        None, ge=500, le=599, description="HTTP status for a request that found the pool exhausted."
    )

    @field_validator("settings")
    @classmethod
    def _setting_names(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        for key in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", key):
                raise PydanticCustomError(
                    "setting",
                    "invalid setting name {found}; expected a PostgreSQL parameter name such as "
                    "statement_timeout or myapp.tenant",
                    {"found": repr(key)},
                )
        return value

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
        if not _IMPORT_PATH.fullmatch(value):
            raise PydanticCustomError(
                "import_path",
                "invalid import path {found}; expected 'package.module:function'",
                {"found": repr(value)},
            )
        return value


class PostgresSink(_Model):
    pool: str = Field(description="Name of a declared pool.")
    table: str = Field(
        min_length=1,
        description="Table each batch is COPYed into, optionally schema-qualified "
        "(`audit.events`); names are quoted as written.",
    )
    columns: list[str] = Field(
        min_length=1,
        description="Columns, in the order of each item's values: items are tuples or lists "
        "in this order, or mappings keyed by these names.",
    )


class JsonlSink(_Model):
    path: str = Field(
        min_length=1,
        description="File each item is appended to as one JSON line (relative to the working "
        "directory).",
    )


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
    attempts: int = Field(5, ge=1, description="Tries per batch, the first included.")
    backoff: Duration = Field(
        written("100ms"), ge=0, description="Wait before the first retry; doubles each retry."
    )
    max_backoff: Duration = Field(written("10s"), ge=0, description="Longest wait between tries.")
    jitter: bool = Field(True, description="Wait a random half to all of each delay.")


class DeadLetter(_Model):
    path: str = Field(
        min_length=1,
        description="JSON-lines file receiving items that could not be written, one line each "
        "with the error (relative to the working directory).",
    )


class BatcherConfig(_Model):
    """Groups writes and flushes them by size or age."""

    max_size: int = Field(500, ge=1, description="Items per batch: a full batch flushes at once.")
    max_wait: Duration = Field(
        written("2s"), gt=0, description="A batch flushes when its oldest item waited this long."
    )
    max_queue: int = Field(
        100_000, ge=1, description="Most items held, queued or being written; then `on_full`."
    )
    on_full: Literal["block", "drop_oldest", "drop_newest", "raise"] = Field(
        "block",
        description="When full, `put` waits (up to `block_timeout`, then raises), evicts the "
        "oldest queued item, drops the new one, or raises. Every drop is counted.",
    )
    block_timeout: Duration = Field(
        written("5s"), gt=0, description="Longest `put` blocks when full."
    )
    concurrency: int = Field(1, ge=1, description="Flushes in flight (1 keeps order).")
    sink: SinkConfig
    retry: RetryPolicy = Field(default_factory=RetryPolicy)  # type: ignore[arg-type]
    dead_letter: DeadLetter | None = Field(
        None,
        description="Where items that cannot be written go; without it they are logged and "
        "counted as dropped (reason undeliverable).",
    )
    shutdown_deadline: Duration = Field(
        written("10s"),
        gt=0,
        description="Longest the shutdown drains; what is not written by then is dead-lettered.",
    )
    write_timeout: Duration | None = Field(
        written("30s"),
        gt=0,
        description="Longest one write of a batch may take before it counts as a failed "
        "attempt (null: unbounded). Not applied to sync callables, which run in a thread.",
    )
    max_links: int = Field(
        32,
        ge=0,
        description="Most links from a flush span to the sampled spans that enqueued its items, "
        "looked up on that many items spread evenly through the batch.",
    )

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


_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
ON_DEMAND_HOOK = "on_demand"
"""The hook name on-demand profiles are reported and stored under (reserved)."""


class ProfilingHook(_Model):
    """Selects requests (by route glob) or a function (`module:qualname`) to profile.

    A hook with only a `name` is used from code, with `@perf.profile(name)`.
    """

    name: str | None = Field(
        None,
        description="Names the hook in metrics, profile files and `perf.profile(name)`; "
        "default: the route or function.",
    )
    route: str | None = Field(
        None,
        description="Glob over route templates (`/reports/*`, `/items/{item_id}`); `*` also "
        "matches `/`. Requests with no route (404s) are never selected.",
    )
    function: str | None = Field(
        None,
        description="`module:qualname` of a function (or `Class.method`) wrapped at startup; "
        "callers holding a reference taken before startup are not profiled.",
    )
    sample_rate: Ratio = Field(written("100%"), description="Share of selected calls profiled.")
    min_duration: Duration = Field(
        written("0s"), description="A profile is kept only when the call took at least this long."
    )
    engine: Literal["pyinstrument", "cprofile"] = Field(
        "pyinstrument",
        description="`pyinstrument`: statistical and async-aware, profiles each request on its "
        "own. `cprofile`: deterministic, for sync functions; one profile at a time per "
        "process, a call overlapping it is skipped.",
    )
    keep: int = Field(20, ge=1, description="Profiles kept for this hook.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.fullmatch(value):
            raise PydanticCustomError(
                "hook_name",
                "invalid hook name; use letters, digits, '_', '-' or '.', starting with a "
                "letter or '_'",
            )
        if value == ON_DEMAND_HOOK:
            raise PydanticCustomError(
                "hook_name", "hook name 'on_demand' is reserved for on-demand profiles"
            )
        return value

    @field_validator("route")
    @classmethod
    def _route_glob(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("/", "*")):
            raise PydanticCustomError(
                "route",
                "invalid route glob; expected a glob over route templates starting with "
                "'/' or '*', e.g. '/reports/*'",
            )
        return value

    @field_validator("function")
    @classmethod
    def _function_path(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.fullmatch(value):
            raise PydanticCustomError(
                "import_path",
                "invalid function {found}; expected 'package.module:qualname'",
                {"found": repr(value)},
            )
        return value

    @model_validator(mode="after")
    def _one_target(self) -> ProfilingHook:
        if self.route is not None and self.function is not None:
            raise PydanticCustomError(
                "hook", "a profiling hook needs exactly one of route or function"
            )
        if self.route is None and self.function is None and self.name is None:
            raise PydanticCustomError(
                "hook",
                "a profiling hook needs a route, a function, or a name (used with "
                "perf.profile(name))",
            )
        return self

    @property
    def label(self) -> str:
        """The hook's name in metrics and profiles: ``name``, else the route or function."""
        return self.name or self.route or self.function or ""


class OnDemandProfiling(_Model):
    """Profile any request that carries `header` with the right token, whatever the sampling."""

    header: str = Field(
        "x-otelperf-profile",
        description="Request header carrying the token (also guards the endpoint).",
    )
    token: str = Field(min_length=16, description="Shared secret; at least 16 characters.")
    keep: int = Field(20, ge=1, description="On-demand profiles kept.")

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        value = value.lower()
        if not _HEADER_NAME.fullmatch(value):
            raise PydanticCustomError(
                "header",
                "invalid header name; expected an HTTP header name such as x-otelperf-profile",
            )
        return value


class ProfileEndpoint(_Model):
    """Lists and serves kept profiles to requests carrying the on-demand token."""

    enabled: bool = Field(False, description="Off by default; needs `on_demand.token`.")
    path: str = Field("/_otelperf/profiles", description="Path of the list; files below it.")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
            raise PydanticCustomError(
                "path",
                "invalid endpoint path; expected an absolute path such as /_otelperf/profiles",
            )
        return value


class ProfilingConfig(_Model):
    """Profiling hooks, on-demand profiling and where profiles are kept."""

    output_dir: str = Field(
        "./profiles", description="Directory profiles are written to (created at startup)."
    )
    max_total_size: Size = Field(
        written("100MiB"),
        description="Oldest profiles are deleted beyond this total (the newest is always kept).",
    )
    interval: Duration = Field(
        written("1ms"), gt=0, description="pyinstrument's sampling interval."
    )
    top_frames: int = Field(
        5, ge=1, le=50, description="Frames listed by own time in the span event."
    )
    app_packages: list[str] = Field(
        default_factory=list,
        description="Packages (import names) counted as your code in the top frames even when "
        "installed in site-packages; code outside the Python installation always is.",
    )

    @field_validator("app_packages")
    @classmethod
    def _package_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
                raise PydanticCustomError(
                    "import_path",
                    "invalid package name {found}; expected an import name such as 'shop'",
                    {"found": repr(name)},
                )
        return value

    hooks: list[ProfilingHook] = Field(
        default_factory=list, description="Checked in order: the first whose target matches wins."
    )
    on_demand: OnDemandProfiling | None = Field(
        None, description="Profiling of requests that carry a token; off when unset."
    )
    endpoint: ProfileEndpoint = Field(
        default_factory=ProfileEndpoint,  # type: ignore[arg-type]
        description="The endpoint listing and serving profiles (off by default).",
    )

    @model_validator(mode="after")
    def _endpoint_needs_token(self) -> ProfilingConfig:
        if self.endpoint.enabled and self.on_demand is None:
            raise PydanticCustomError(
                "endpoint", "endpoint.enabled needs on_demand.token, which guards the endpoint"
            )
        seen: set[str] = set()
        for hook in self.hooks:
            if hook.label in seen:
                raise PydanticCustomError(
                    "hook",
                    "two profiling hooks are named {name}; give one a different name",
                    {"name": repr(hook.label)},
                )
            seen.add(hook.label)
        return self
