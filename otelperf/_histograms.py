"""Explicit-bucket histograms aggregated in plain Python, for the per-request hot path.

One SDK ``Histogram.record`` costs 10-25 µs here (attribute copying, hashing, view
matching, the exemplar filter), more than the whole request it measures. These
histograms keep one small record per attribute set, keyed by a tuple the caller
already has, so a point costs about a microsecond. They are handed to every
metric reader at collection time (see :func:`attach`), as cumulative
``HistogramDataPoint``\\ s with trace-based exemplars, exactly as the SDK would
have produced them.

Components record through :class:`ApiHistogram` without a lock: each thread writes
its own shard of a series, and collection sums the shards (the count taken from the
bucket counts, so a snapshot taken mid-write is still consistent). The HTTP
middleware's :meth:`FastHistogram.record` updates the series itself under a lock.

Used only where otelperf built the MeterProvider and its readers ask for
cumulative histograms with explicit buckets; elsewhere callers get a
:class:`SdkHistogram`, which records through the SDK as usual.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry.context import get_current
from opentelemetry.sdk.metrics._internal.exemplar import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import INVALID_SPAN, SpanContext, TraceFlags, get_current_span

from otelperf._spans import SPAN_CONTEXT_FIELDS, SPAN_KEY

__all__ = [
    "ApiHistogram",
    "FastHistogram",
    "HistogramRecorder",
    "Registry",
    "SdkHistogram",
    "attach",
]

_log = logging.getLogger("otelperf.telemetry")

MAX_SERIES = 2000
"""Attribute sets kept per histogram; further ones share an overflow series (as the SDK)."""

_OVERFLOW_KEY = ("__otelperf_overflow__",)
_OVERFLOW_ATTRS = {"otel.metric.overflow": True}
_NO_ATTRIBUTES: dict[str, Any] = {}
_KNOWN_KEYS = 256
"""Attribute dicts whose series :class:`ApiHistogram` remembers (then starts over)."""


class HistogramRecorder(Protocol):
    """What hot-path callers record through, fast or not."""

    def record(
        self,
        value: float,
        key: Hashable,
        attributes: Mapping[str, Any],
        span_context: SpanContext | None = None,
    ) -> None:
        """Record ``value`` for the series ``key`` (whose attributes are ``attributes``)."""


class SdkHistogram:
    """Records through an SDK (or API) histogram: the slow path, always correct."""

    def __init__(self, histogram: Any) -> None:
        self._histogram = histogram

    def record(
        self,
        value: float,
        key: Hashable,
        attributes: Mapping[str, Any],
        span_context: SpanContext | None = None,
    ) -> None:
        self._histogram.record(value, attributes)


class ApiHistogram:
    """A :class:`FastHistogram` behind the API's ``record(amount, attributes, context)``.

    For otelperf's components, written against the OpenTelemetry API: the series key is
    the attribute items (hashable values; anything else takes the SDK-like slow key), and
    the exemplar comes from the current span, as the SDK's trace-based filter does.
    Components record with attribute dicts they never change afterwards.
    """

    def __init__(self, histogram: FastHistogram) -> None:
        self._histogram = histogram
        self._local = threading.local()

    def record(
        self, amount: float, attributes: Mapping[str, Any] | None = None, context: Any = None
    ) -> None:
        if not amount >= 0.0:  # negative or NaN: refused, as FastHistogram.record does
            return
        attrs = attributes or _NO_ATTRIBUTES
        # Components record with a few long-lived attribute dicts: each thread remembers
        # its own shard of each dict's series by the dict's identity (the entry holds the
        # dict, so its id stays its own). Only that thread writes the shard: no lock.
        try:
            bound = self._local.bound.get(id(attrs))
        except AttributeError:  # this thread's first point
            self._local.bound, self._local.shards, self._local.mine = {}, {}, {}
            bound = None
        shard = bound[1] if bound is not None and bound[0] is attrs else self._bind(attrs)
        span: Any
        if SPAN_KEY is not None:
            span = (context if context is not None else get_current()).get(SPAN_KEY)
        else:  # pragma: no cover - another API version
            span = get_current_span(context)
        self._histogram.add_to_shard(
            shard, amount, None if span is None or span is INVALID_SPAN else span.get_span_context()
        )

    def _bind(self, attrs: Mapping[str, Any]) -> _Series:
        key: Hashable = tuple(attrs.items())
        try:
            hash(key)
        except TypeError:  # a sequence-valued attribute
            key = repr(sorted(attrs.items()))
        local = self._local
        shard: _Series | None = local.shards.get(key)
        if shard is None:  # one shard per series and thread, however many dicts and keys
            shard, own_series = self._histogram.shard(key, attrs, local.mine)
            if own_series:  # an overflowed key is not remembered: the map stays bounded
                local.shards[key] = shard
        if type(attrs) is dict:  # otelperf's own dicts, never changed once recorded with
            if len(local.bound) >= _KNOWN_KEYS:
                local.bound = {}
            local.bound[id(attrs)] = (attrs, shard)
        return shard


class _Series:
    __slots__ = (
        "attributes",
        "count",
        "counts",
        "exemplars",
        "max",
        "min",
        "owner",
        "shards",
        "start",
        "sum",
    )

    def __init__(self, attributes: Mapping[str, Any], buckets: int) -> None:
        self.attributes = dict(attributes)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.counts = [0] * buckets
        self.exemplars: list[tuple[float, int, int, int] | None] = [None] * buckets
        self.start = time.time_ns()
        self.shards: list[_Series] = []
        """Per-thread parts, each written by one thread only, summed at collection."""
        self.owner: threading.Thread | None = None
        """For a shard: the thread that writes it (its shard is folded in once it ends)."""


class FastHistogram:
    """A cumulative explicit-bucket histogram with one exemplar per bucket."""

    def __init__(
        self,
        name: str,
        unit: str,
        description: str,
        boundaries: Sequence[float],
        *,
        exemplars: bool = True,
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.boundaries = tuple(boundaries)
        self._exemplars = exemplars
        self._series: dict[Hashable, _Series] = {}
        self._lock = threading.Lock()

    def record(
        self,
        value: float,
        key: Hashable,
        attributes: Mapping[str, Any],
        span_context: SpanContext | None = None,
    ) -> None:
        """Add ``value`` to series ``key``; an exemplar when the current span is sampled."""
        if not value >= 0.0:  # negative or NaN: a histogram of durations/sizes refuses it
            return
        with self._lock:
            self.add_to_shard(self._series_of(key, attributes), value, span_context)

    def shard(
        self, key: Hashable, attributes: Mapping[str, Any], mine: dict[int, _Series]
    ) -> tuple[_Series, bool]:
        """The calling thread's part of the series of ``key``, to write without the lock,
        and whether that series is the key's own (False: the overflow series).

        ``mine`` maps ``id(series)`` to this thread's shards of this histogram: one shard
        per series and thread, whatever the number of keys that lead to it.
        """
        with self._lock:
            series = self._series_of(key, attributes)
            shard = mine.get(id(series))
            if shard is None:
                shard = _Series(series.attributes, len(self.boundaries) + 1)
                shard.owner = threading.current_thread()
                series.shards.append(shard)
                mine[id(series)] = shard  # series are never dropped: the id stays theirs
        return shard, series is not self._series.get(_OVERFLOW_KEY)

    def add_to_shard(self, shard: _Series, value: float, span_context: SpanContext | None) -> None:
        """Add ``value`` (>= 0) to ``shard``: a series under the lock, or the calling
        thread's own shard without it."""
        index = bisect_left(self.boundaries, value)
        shard.counts[index] += 1  # first: a snapshot may lag in sum, never run ahead of it
        shard.count += 1
        shard.sum += value
        if value < shard.min:
            shard.min = value
        if value > shard.max:
            shard.max = value
        if self._exemplars and span_context is not None:
            if SPAN_CONTEXT_FIELDS:  # one unpacking instead of four property calls
                trace_id, span_id, _, flags, _, valid = span_context
                if flags & TraceFlags.SAMPLED and valid:
                    shard.exemplars[index] = (value, time.time_ns(), trace_id, span_id)
            elif span_context.trace_flags.sampled and span_context.is_valid:  # pragma: no cover
                shard.exemplars[index] = (
                    value,
                    time.time_ns(),
                    span_context.trace_id,
                    span_context.span_id,
                )

    def _series_of(self, key: Hashable, attributes: Mapping[str, Any]) -> _Series:
        """The series of ``key``, made when new (the overflow series past the limit);
        the caller holds the lock."""
        series = self._series.get(key)
        if series is not None:
            return series
        if len(self._series) >= MAX_SERIES:
            series = self._series.get(_OVERFLOW_KEY)
            if series is None:
                series = _Series(_OVERFLOW_ATTRS, len(self.boundaries) + 1)
                self._series[_OVERFLOW_KEY] = series
            return series  # not stored under `key`: memory stays bounded
        series = _Series(attributes, len(self.boundaries) + 1)
        self._series[key] = series
        return series

    def collect(self, now: int) -> Metric | None:
        """A snapshot of every series as a cumulative histogram metric, or None when empty."""
        with self._lock:
            unique = {id(s): s for s in self._series.values()}
            points = []
            for series in unique.values():
                merged = _merged(series)
                if merged is None:
                    continue
                count, total, low, high, counts, exemplars = merged
                points.append(
                    HistogramDataPoint(
                        attributes=dict(series.attributes),
                        start_time_unix_nano=series.start,
                        time_unix_nano=now,
                        count=count,
                        sum=total,
                        bucket_counts=counts,
                        explicit_bounds=list(self.boundaries),
                        min=low,
                        max=high,
                        exemplars=[
                            Exemplar({}, e[0], e[1], e[3], e[2]) for e in exemplars if e is not None
                        ],
                    )
                )
        if not points:
            return None
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(
                data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE
            ),
        )


def _merged(
    series: _Series,
) -> tuple[int, float, float, float, list[int], list[tuple[float, int, int, int] | None]] | None:
    """``series`` with its per-thread shards summed: count, sum, min, max, buckets, exemplars.

    Shards are read while their threads may be writing: the count is taken from the
    bucket counts so the two always agree; a value being added may be counted in its
    bucket before its sum, min and max show it (they catch up at the next collection).
    Shards of threads that have ended are folded into ``series`` and dropped.
    """
    if series.shards:
        _fold_ended(series)
    parts = [series, *series.shards] if series.shards else [series]
    counts = [sum(column) for column in zip(*(part.counts for part in parts), strict=True)]
    count = sum(counts)
    if not count:
        return None
    exemplars: list[tuple[float, int, int, int] | None] = []
    for column in zip(*(part.exemplars for part in parts), strict=True):
        found = [e for e in column if e is not None]
        exemplars.append(max(found, key=lambda e: e[1]) if found else None)  # the latest
    return (
        count,
        sum(part.sum for part in parts),
        min(part.min for part in parts),
        max(part.max for part in parts),
        counts,
        exemplars,
    )


def _fold_ended(series: _Series) -> None:
    """Add the shards of ended threads into ``series`` itself (under the histogram's lock)."""
    keep: list[_Series] = []
    for shard in series.shards:
        owner = shard.owner
        if owner is None or owner.is_alive():
            keep.append(shard)
            continue
        series.count += shard.count
        series.sum += shard.sum
        series.min = min(series.min, shard.min)
        series.max = max(series.max, shard.max)
        for index, count in enumerate(shard.counts):
            series.counts[index] += count
        for index, exemplar in enumerate(shard.exemplars):
            current = series.exemplars[index]
            if exemplar is not None and (current is None or exemplar[1] > current[1]):
                series.exemplars[index] = exemplar
    if len(keep) != len(series.shards):
        series.shards = keep


class Registry:
    """The fast histograms of one MeterProvider, reported under one instrumentation scope."""

    def __init__(self, scope: InstrumentationScope) -> None:
        self.scope = scope
        self._histograms: dict[str, FastHistogram] = {}
        self._lock = threading.Lock()

    def histogram(
        self, name: str, unit: str, description: str, boundaries: Sequence[float]
    ) -> FastHistogram:
        """The histogram ``name``, created on first use (like a meter's instruments)."""
        with self._lock:
            found = self._histograms.get(name)
            if found is None:
                found = FastHistogram(
                    name, unit, description, boundaries, exemplars=_exemplars_enabled()
                )
                self._histograms[name] = found
            return found

    def metrics(self) -> list[Metric]:
        now = time.time_ns()
        with self._lock:
            histograms = list(self._histograms.values())
        return [m for m in (h.collect(now) for h in histograms) if m is not None]


def _exemplars_enabled() -> bool:
    # The SDK's own switch (OTEL_METRICS_EXEMPLAR_FILTER); trace_based is its default.
    return os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based") != "always_off"


def cumulative_histograms(reader: MetricReader) -> bool:
    """Whether ``reader`` wants cumulative temporality for histograms (the default)."""
    temporalities = getattr(reader, "_instrument_class_temporality", None)
    if not isinstance(temporalities, dict):
        return False
    for cls, temporality in temporalities.items():
        if getattr(cls, "__name__", "") in ("_Histogram", "Histogram"):
            return bool(temporality == AggregationTemporality.CUMULATIVE)
    return False


def attach(reader: MetricReader, registry: Registry, resource: Resource) -> bool:
    """Make ``reader`` report ``registry``'s histograms with everything else it collects.

    The SDK has no metric-producer hook yet, so this wraps the collect callback the
    MeterProvider installed on the reader. Returns False (and changes nothing) when
    the reader is not one this can serve.
    """
    original: Callable[..., MetricsData | None] | None = getattr(reader, "_collect", None)
    if original is None or not cumulative_histograms(reader):
        return False

    def collect(metric_reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
        data = original(metric_reader, timeout_millis=timeout_millis)
        try:
            extra = registry.metrics()
        except Exception:  # never break the reader: the SDK's own metrics still go out
            _log.warning("cannot collect otelperf's histograms", exc_info=True)
            return data
        if not extra:
            return data
        return _merge(data, extra, registry.scope, resource)

    reader._collect = collect  # type: ignore[assignment]
    return True


def _merge(
    data: MetricsData | None, extra: list[Metric], scope: InstrumentationScope, resource: Resource
) -> MetricsData:
    if data is None or not data.resource_metrics:
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=resource,
                    scope_metrics=[ScopeMetrics(scope=scope, metrics=extra, schema_url="")],
                    schema_url="",
                )
            ]
        )
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for index, scope_metrics in enumerate(scopes):
        if scope_metrics.scope.name == scope.name:
            scopes[index] = ScopeMetrics(
                scope=scope_metrics.scope,
                metrics=[*scope_metrics.metrics, *extra],
                schema_url=scope_metrics.schema_url,
            )
            break
    else:
        scopes.append(ScopeMetrics(scope=scope, metrics=extra, schema_url=""))
    merged = ResourceMetrics(
        resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url
    )
    return MetricsData(resource_metrics=[merged, *rest])
