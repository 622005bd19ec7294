"""The cache's instruments, and how it reports without slowing the call it reports on.

Counts (hits, misses, errors, evictions, ...) are plain integers read by observable
instruments at collection time: one SDK ``counter.add`` with attributes costs more
than a memory hit. Operations that leave the process (Redis) get a span and a
duration point; from async code both are recorded a moment later by a callback the
event loop runs while the caller waits on its next I/O (``loop.call_soon``), with the
exact start and end times and the caller's context captured at the call, so the span
still sits under the request span and the histogram exemplar still points at it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, get_current_span

from otelperf import _instruments
from otelperf._component import ComponentTelemetry
from otelperf._deferred import NextTurn
from otelperf._instruments import BYTES_BUCKETS, SECONDS_BUCKETS, InstrumentSpec
from otelperf._spans import SpanRecorder

__all__ = ["CacheTelemetry"]

_log = logging.getLogger("otelperf.cache")

_instruments.register(
    InstrumentSpec(
        "otelperf.cache.requests",
        "observable_counter",
        "{request}",
        "Cache lookups (direct gets and decorated calls) by result: hit, miss, stale (an "
        "expired value served while it is refreshed) or error (the backend failed and the "
        "origin answered); `cache.tier` (l1 or l2) marks the hits of tiered caches.",
        ("cache.name", "cache.result", "cache.tier"),
        "cache",
    ),
    InstrumentSpec(
        "otelperf.cache.operation.duration",
        "histogram",
        "s",
        "Duration of cache operations that leave the process (Redis): `cache.operation` is "
        "get, set, delete, invalidate, lock or ping. In-memory operations are not timed: "
        "recording a point costs more than they do.",
        ("cache.name", "cache.operation", "error.type"),
        "cache",
        SECONDS_BUCKETS,
    ),
    InstrumentSpec(
        "otelperf.cache.item.size",
        "histogram",
        "By",
        "Size of values written to Redis, after serialization and compression.",
        ("cache.name",),
        "cache",
        BYTES_BUCKETS,
    ),
    InstrumentSpec(
        "otelperf.cache.origin.duration",
        "histogram",
        "s",
        "Duration of the origin (the decorated function) when the cache could not answer: "
        "the cost of a miss.",
        ("cache.name", "error.type"),
        "cache",
        SECONDS_BUCKETS,
    ),
    InstrumentSpec(
        "otelperf.cache.evictions",
        "observable_counter",
        "{entry}",
        "Entries pushed out of an in-process cache (memory, or a tiered cache's L1) to make room.",
        ("cache.name",),
        "cache",
    ),
    InstrumentSpec(
        "otelperf.cache.entries",
        "observable_gauge",
        "{entry}",
        "Entries held in process (memory, or a tiered cache's L1), expired ones included "
        "until they are evicted or read.",
        ("cache.name",),
        "cache",
    ),
    InstrumentSpec(
        "otelperf.cache.errors",
        "observable_counter",
        "{error}",
        "Cache failures, by `error.type`: timeout, connection, response (Redis refused the "
        "command), breaker_open (Redis skipped), invalid_signature and decode (a stored "
        "entry rejected, counted as a miss), serialize (a value the serializer cannot store).",
        ("cache.name", "cache.operation", "error.type"),
        "cache",
    ),
    InstrumentSpec(
        "otelperf.cache.breaker.state",
        "observable_gauge",
        "1",
        "State of a cache's Redis circuit breaker: 0 closed, 1 half-open (probing), 2 open.",
        ("cache.name",),
        "cache",
    ),
    InstrumentSpec(
        "otelperf.cache.coalesced",
        "observable_counter",
        "{request}",
        "Missed lookups answered by another caller's recompute (single flight, or the "
        "fleet-wide lock) instead of calling the origin themselves.",
        ("cache.name",),
        "cache",
    ),
)

_NS = 1_000_000_000


def _sampled_parent(ctx: Context | None) -> bool:
    """Whether ``ctx`` holds a sampled span: cache spans are only recorded under one.

    A cache operation outside any trace (or in a trace sampled out) would otherwise
    start a root trace of its own: noise in the trace store, at the full cost of a span.
    """
    return bool(get_current_span(ctx).get_span_context().trace_flags.sampled)


class CacheTelemetry:
    """Counters and instruments of one cache."""

    def __init__(
        self,
        name: str,
        *,
        tiered: bool,
        span_attributes: dict[str, Any],
        record_keys: bool,
        span_threshold: float = 0.0,
    ) -> None:
        self.name = name
        self.tiered = tiered
        self.record_keys = record_keys
        self.span_threshold = span_threshold
        self.hits = 0
        self.l2_hits = 0
        self.misses = 0
        self.stale = 0
        self.errors = 0
        self.coalesced = 0
        self.errors_by: dict[tuple[str, str], int] = {}
        self.evictions: Callable[[], int] = lambda: 0
        self.entries: Callable[[], int] | None = None
        self.breaker_state: Callable[[], int] | None = None
        self._spans: SpanRecorder | None = None
        self._duration: Any = None
        self._size: Any = None
        self._origin: Any = None
        self._base = {"cache.name": name}
        self._span_base = {"cache.name": name, **span_attributes}
        self._op_attrs: dict[tuple[str, str | None], dict[str, str]] = {}
        self._pending: NextTurn[tuple[Any, ...]] = NextTurn(self._record)
        self._logged: set[str] = set()

    # --- lifecycle -------------------------------------------------------------

    def bind(self, telemetry: ComponentTelemetry) -> None:
        """Create the instruments on ``telemetry.meter``; spans go to ``telemetry.tracer``."""
        meter = telemetry.meter
        self._duration = _instruments.create(meter, "otelperf.cache.operation.duration")
        self._size = _instruments.create(meter, "otelperf.cache.item.size")
        self._origin = _instruments.create(meter, "otelperf.cache.origin.duration")
        _instruments.create(meter, "otelperf.cache.requests", [self._observe_requests])
        _instruments.create(meter, "otelperf.cache.errors", [self._observe_errors])
        _instruments.create(meter, "otelperf.cache.coalesced", [self._observe_coalesced])
        if self.entries is not None:
            _instruments.create(meter, "otelperf.cache.evictions", [self._observe_evictions])
            _instruments.create(meter, "otelperf.cache.entries", [self._observe_entries])
        if self.breaker_state is not None:
            _instruments.create(meter, "otelperf.cache.breaker.state", [self._observe_breaker])
        self._spans = SpanRecorder(telemetry.tracer)

    def flush(self) -> None:
        """Record what is still deferred (at stop, and by the event loop's callback)."""
        self._pending.flush()

    # --- counting --------------------------------------------------------------

    def error(self, operation: str, kind: str) -> None:
        """Count one failure of ``operation`` (see ``otelperf.cache.errors``)."""
        key = (operation, kind)
        self.errors_by[key] = self.errors_by.get(key, 0) + 1

    def log_once(self, what: str, message: str, *args: Any) -> None:
        """Log ``message`` the first time ``what`` happens (then it is only counted)."""
        if what not in self._logged:
            self._logged.add(what)
            _log.warning("cache %r: " + message, self.name, *args)

    # --- operations ------------------------------------------------------------

    def operation(
        self,
        op: str,
        start_ns: int,
        duration: float,
        ctx: Context | None,
        *,
        hit: bool | None = None,
        size: int | None = None,
        error: str | None = None,
        key: str | None = None,
        deferred: bool = True,
    ) -> None:
        """Report one backend operation: a span and a duration point (a size point for set).

        From async code (``deferred``) the recording waits for the event loop's next
        turn; from threads it happens now.
        """
        if self._spans is None:  # not bound yet
            return
        item = (op, start_ns, duration, ctx, hit, size, error, key)
        if deferred:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._record(item)
                return
            self._pending.add(item, loop)
            return
        self._record(item)

    def origin(self, duration: float, ctx: Context | None, error: str | None) -> None:
        """Report one origin call."""
        if self._origin is None:
            return
        try:
            attrs = self._base if error is None else {**self._base, "error.type": error}
            self._origin.record(duration, attrs, context=ctx)
        except Exception as exc:  # pragma: no cover - the SDK does not raise here
            self.log_once("telemetry", "recording telemetry failed: %s", exc)

    def memory_span(
        self, op: str, start_ns: int, end_ns: int, ctx: Context | None, hit: bool | None, key: str
    ) -> None:
        """A span for an in-memory operation (only when the config asks for them)."""
        spans = self._spans
        if spans is None or not _sampled_parent(ctx):
            return
        attrs: dict[str, Any] = {"cache.name": self.name, "cache.tier": "memory"}
        if hit is not None:
            attrs["cache.hit"] = hit
        if self.record_keys:
            attrs["cache.key"] = key
        try:
            spans.record(f"cache.{op}", SpanKind.INTERNAL, attrs, start_ns, end_ns, ctx)
        except Exception as exc:  # a sampler or processor of the app's failed: not our call's
            self.log_once("telemetry", "recording telemetry failed: %s", exc)

    def _attrs(self, op: str, error: str | None) -> dict[str, str]:
        key = (op, error)
        attrs = self._op_attrs.get(key)
        if attrs is None:
            attrs = {"cache.name": self.name, "cache.operation": op}
            if error is not None:
                attrs["error.type"] = error
            self._op_attrs[key] = attrs
        return attrs

    def _record(self, item: tuple[Any, ...]) -> None:
        try:
            self._emit(*item)
        except Exception as exc:  # a sampler or processor of the app's failed: not our call's
            self.log_once("telemetry", "recording telemetry failed: %s", exc)

    def _emit(
        self,
        op: str,
        start_ns: int,
        duration: float,
        ctx: Context | None,
        hit: bool | None,
        size: int | None,
        error: str | None,
        key: str | None,
    ) -> None:
        spans = self._spans
        if spans is None:
            return
        self._duration.record(duration, self._attrs(op, error), context=ctx)
        if op == "set" and size is not None and error is None:
            self._size.record(size, self._base, context=ctx)
        if (error is None and duration < self.span_threshold) or not _sampled_parent(ctx):
            return
        attrs: dict[str, Any] = dict(self._span_base)
        if hit is not None:
            attrs["cache.hit"] = hit
        if size is not None:
            attrs["cache.item_size"] = size
        if key is not None and self.record_keys:
            attrs["cache.key"] = key
        if error is not None:
            attrs["error.type"] = error
        end_ns = start_ns + int(duration * _NS)
        spans.record(f"cache.{op}", SpanKind.CLIENT, attrs, start_ns, end_ns, ctx, error)

    # --- observable callbacks --------------------------------------------------

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        name = self.name
        out = [
            Observation(self.misses, {"cache.name": name, "cache.result": "miss"}),
            Observation(self.stale, {"cache.name": name, "cache.result": "stale"}),
            Observation(self.errors, {"cache.name": name, "cache.result": "error"}),
        ]
        if self.tiered:
            l1 = self.hits - self.l2_hits
            out.append(
                Observation(l1, {"cache.name": name, "cache.result": "hit", "cache.tier": "l1"})
            )
            out.append(
                Observation(
                    self.l2_hits, {"cache.name": name, "cache.result": "hit", "cache.tier": "l2"}
                )
            )
        else:
            out.append(Observation(self.hits, {"cache.name": name, "cache.result": "hit"}))
        return out

    def _observe_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(n, {"cache.name": self.name, "cache.operation": op, "error.type": kind})
            for (op, kind), n in list(self.errors_by.items())
        ]

    def _observe_coalesced(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.coalesced, self._base)]

    def _observe_evictions(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.evictions(), self._base)]

    def _observe_entries(self, options: CallbackOptions) -> Iterable[Observation]:
        entries = self.entries
        return [Observation(entries(), self._base)] if entries is not None else []

    def _observe_breaker(self, options: CallbackOptions) -> Iterable[Observation]:
        state = self.breaker_state
        return [Observation(state(), self._base)] if state is not None else []
