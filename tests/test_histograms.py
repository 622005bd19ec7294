"""The plain-Python histograms give the same data the SDK would, and fall back when they can't."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import otelperf
from otelperf._histograms import MAX_SERIES, FastHistogram, Registry, SdkHistogram, attach

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]


def test_fast_histogram_matches_the_sdk() -> None:
    """Counts, sums, min, max and bucket counts equal the SDK's for the same measurements."""
    sdk_reader = InMemoryMetricReader()
    sdk = MeterProvider(
        metric_readers=[sdk_reader],
        views=[View(instrument_name="h", aggregation=ExplicitBucketHistogramAggregation(BOUNDS))],
    )
    sdk_hist = sdk.get_meter("t").create_histogram("h", unit="s")
    fast_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[fast_reader])
    registry = Registry(InstrumentationScope("otelperf"))
    assert attach(fast_reader, registry, Resource.create({}))
    fast = registry.histogram("h", "s", "d", BOUNDS)
    rng = random.Random(3)
    for _ in range(5000):
        value = rng.choice([0.0, 0.005, 0.01, 1.0, 7.0]) if rng.random() < 0.1 else rng.random()
        route = rng.choice(["/a", "/b"])
        sdk_hist.record(value, {"route": route})
        fast.record(value, (route,), {"route": route})
    expected = {p.attributes["route"]: p for p in _points(sdk_reader, "h")}
    got = {p.attributes["route"]: p for p in _points(fast_reader, "h")}
    assert set(got) == set(expected) == {"/a", "/b"}
    for route, point in expected.items():
        assert got[route].count == point.count
        assert got[route].sum == pytest.approx(point.sum)
        assert got[route].min == point.min
        assert got[route].max == point.max
        assert list(got[route].bucket_counts) == list(point.bucket_counts)
        assert list(got[route].explicit_bounds) == list(point.explicit_bounds)
    provider.shutdown()
    sdk.shutdown()


def test_exemplar_only_for_sampled_spans() -> None:
    """A sampled span's context becomes the bucket's exemplar; an unsampled one does not."""
    tracer = TracerProvider().get_tracer("t")
    hist = FastHistogram("h", "s", "d", BOUNDS)
    with tracer.start_as_current_span("x") as span:
        hist.record(0.02, ("a",), {"a": 1}, span.get_span_context())
    metric = hist.collect(1)
    assert metric is not None
    (point,) = metric.data.data_points
    (exemplar,) = point.exemplars
    assert exemplar.trace_id == span.get_span_context().trace_id
    assert exemplar.span_id == span.get_span_context().span_id
    assert exemplar.value == 0.02
    unsampled = TracerProvider(sampler=_never()).get_tracer("t").start_span("y")
    other = FastHistogram("h", "s", "d", BOUNDS)
    other.record(0.02, ("a",), {"a": 1}, unsampled.get_span_context())
    metric = other.collect(1)
    assert metric is not None
    assert metric.data.data_points[0].exemplars == []


def _never() -> Any:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    return ALWAYS_OFF


def test_series_beyond_the_limit_share_an_overflow_series() -> None:
    """More than MAX_SERIES attribute sets do not grow memory: the rest go to overflow."""
    hist = FastHistogram("h", "s", "d", BOUNDS)
    for i in range(MAX_SERIES + 500):
        hist.record(0.01, (i,), {"i": i})
    metric = hist.collect(1)
    assert metric is not None
    points: list[Any] = list(metric.data.data_points)
    assert len(points) == MAX_SERIES + 1
    overflow = [p for p in points if (p.attributes or {}).get("otel.metric.overflow")]
    assert overflow[0].count == 500


def test_negative_and_nan_values_are_ignored() -> None:
    """Values a duration or size cannot take are dropped, as the SDK drops them."""
    hist = FastHistogram("h", "s", "d", BOUNDS)
    hist.record(-1.0, ("a",), {})
    hist.record(float("nan"), ("a",), {})
    assert hist.collect(1) is None


def test_delta_reader_falls_back_to_the_sdk() -> None:
    """A reader asking for delta histograms is not wrapped; recording goes through the SDK."""
    from opentelemetry.sdk.metrics import Histogram

    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    perf = otelperf.Perf(
        otelperf.load_config(
            {
                "version": 1,
                "service": {"name": "x"},
                "telemetry": {"exporter": "none", "set_global": False},
            }
        ),
        metric_readers=[reader],
    )
    with perf:
        telemetry = perf._require()
        assert telemetry.fast is None
        recorder = telemetry.histogram(perf.meter, "http.server.request.duration")
        assert isinstance(recorder, SdkHistogram)
        recorder.record(0.2, ("k",), {"http.route": "/x"})
        (point,) = _points(reader, "http.server.request.duration")
        assert point.count == 1


def test_exemplars_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_METRICS_EXEMPLAR_FILTER=always_off keeps exemplars off the fast path too."""
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")
    registry = Registry(InstrumentationScope("otelperf"))
    hist = registry.histogram("h", "s", "d", BOUNDS)
    with TracerProvider().get_tracer("t").start_as_current_span("x") as span:
        hist.record(0.02, ("a",), {"a": 1}, span.get_span_context())
    (metric,) = registry.metrics()
    assert metric.data.data_points[0].exemplars == []


def test_fast_histograms_join_the_sdk_scope() -> None:
    """Collected with SDK instruments of the same scope, they land in one ScopeMetrics."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("otelperf").create_counter("c").add(1)
    registry = Registry(InstrumentationScope("otelperf"))
    attach(reader, registry, Resource.create({}))
    registry.histogram("h", "s", "d", BOUNDS).record(0.1, ("a",), {"a": 1})
    data = reader.get_metrics_data()
    assert data is not None
    scopes = [sm for rm in data.resource_metrics for sm in rm.scope_metrics]
    assert len(scopes) == 1
    assert {m.name for m in scopes[0].metrics} == {"c", "h"}
    provider.shutdown()


def test_overflow_keys_are_not_remembered() -> None:
    """Keys beyond the series limit do not each take memory: the map stops growing."""
    hist = FastHistogram("h", "s", "d", BOUNDS)
    for i in range(MAX_SERIES + 5000):
        hist.record(0.01, (i,), {"i": i})
    assert len(hist._series) == MAX_SERIES + 1


def test_component_histograms_take_the_fast_path_through_perf(postgres_dsn: str) -> None:
    """A pool started by Perf records wait/use times in the plain-Python histograms, exactly."""
    import asyncio

    from otelperf._histograms import ApiHistogram
    from otelperf.testing import capture

    config = {
        "version": 1,
        "service": {"name": "x"},
        "runtime": {"process": False, "event_loop_lag": False},
        "pools": {"main": {"conninfo": postgres_dsn, "min_size": 1, "max_size": 2}},
    }
    with capture(config) as telemetry:
        perf = telemetry.perf
        trace_ids = []

        async def drive() -> None:
            await perf.astart()
            try:
                assert isinstance(perf.pool("main")._state.wait_time, ApiHistogram)  # type: ignore[union-attr]
                for _ in range(3):
                    with perf.tracer.start_as_current_span("work") as span:
                        trace_ids.append(span.get_span_context().trace_id)
                        async with perf.pool("main").connection() as conn:
                            await conn.execute("SELECT 1")
                (wait,) = telemetry.points("db.client.connection.wait_time")
                assert wait.count == 3
                assert wait.exemplars
                assert wait.exemplars[0].trace_id in trace_ids
                (use,) = telemetry.points("db.client.connection.use_time")
                assert use.count == 3
            finally:
                await perf.ashutdown()

        asyncio.run(drive())


def _series_counts(hist: FastHistogram) -> dict[tuple[Any, ...], int]:
    metric = hist.collect(1)
    assert metric is not None
    points: list[Any] = list(metric.data.data_points)
    return {tuple(sorted((p.attributes or {}).items())): p.count for p in points}


def test_api_histogram_one_series_per_attribute_set() -> None:
    """Equal attribute dicts, remembered or new, land in one series with every value counted."""
    from otelperf._histograms import ApiHistogram

    hist = FastHistogram("h", "s", "d", BOUNDS)
    api = ApiHistogram(hist)
    attrs = {"db.system.name": "postgresql", "db.operation.name": "SELECT"}
    for _ in range(1000):
        api.record(0.01, attrs)
    api.record(0.02, dict(attrs))  # equal content, another dict
    api.record(0.03, {"db.system.name": "postgresql"})
    assert _series_counts(hist) == {
        (("db.operation.name", "SELECT"), ("db.system.name", "postgresql")): 1001,
        (("db.system.name", "postgresql"),): 1,
    }


def test_api_histogram_forgets_bindings_but_not_values() -> None:
    """Past the remembered-dict limit bindings start over; no value goes to a wrong series."""
    from types import MappingProxyType

    from otelperf._histograms import _KNOWN_KEYS, ApiHistogram

    hist = FastHistogram("h", "s", "d", BOUNDS)
    api = ApiHistogram(hist)
    dicts = [{"n": i % 10} for i in range(_KNOWN_KEYS * 3)]
    for d in dicts:
        api.record(0.01, d)
    api.record(0.01, MappingProxyType({"n": 0}))  # a read-only view: recorded, not remembered
    bound = api._local.bound
    assert len(bound) <= _KNOWN_KEYS
    assert all(isinstance(v[0], dict) for v in bound.values())
    assert len(api._local.shards) == 10  # one shard per key in this thread, however many dicts
    counts = _series_counts(hist)
    assert counts[(("n", 0),)] == len([d for d in dicts if d["n"] == 0]) + 1
    assert sum(counts.values()) == len(dicts) + 1


def test_api_histogram_exemplar_from_the_current_span() -> None:
    """A point recorded under a sampled span keeps that span as its bucket's exemplar."""
    from otelperf._histograms import ApiHistogram

    tracer = TracerProvider().get_tracer("t")
    hist = FastHistogram("h", "s", "d", BOUNDS)
    api = ApiHistogram(hist)
    with tracer.start_as_current_span("x") as span:
        api.record(0.02, {"a": 1})
    api.record(-1.0, {"a": 1})  # refused, as the SDK refuses it
    metric = hist.collect(1)
    assert metric is not None
    (point,) = metric.data.data_points
    assert point.count == 1  # type: ignore[union-attr]
    (exemplar,) = point.exemplars
    assert exemplar.span_id == span.get_span_context().span_id


def test_api_histogram_threads_lose_no_value() -> None:
    """Eight threads recording into one series at once: every value counted, sum exact."""
    import threading

    from otelperf._histograms import ApiHistogram

    hist = FastHistogram("h", "s", "d", BOUNDS)
    api = ApiHistogram(hist)
    attrs = {"pool": "main"}
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(20_000):
            api.record(0.25, attrs)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metric = hist.collect(1)
    assert metric is not None
    (point,) = metric.data.data_points
    assert point.count == 160_000  # type: ignore[union-attr]
    assert point.sum == 0.25 * 160_000  # type: ignore[union-attr]


def test_collection_during_writes_stays_consistent() -> None:
    """Snapshots taken while threads write always have count == sum of bucket counts."""
    import threading

    from otelperf._histograms import ApiHistogram

    hist = FastHistogram("h", "s", "d", BOUNDS)
    api = ApiHistogram(hist)
    attrs = {"pool": "main"}
    done = threading.Event()

    def work() -> None:
        for i in range(50_000):
            api.record(BOUNDS[i % len(BOUNDS)], attrs)
        done.set()

    writer = threading.Thread(target=work)
    writer.start()
    snapshots = 0
    while not done.is_set() or snapshots == 0:
        metric = hist.collect(1)
        if metric is not None:
            points: list[Any] = list(metric.data.data_points)
            assert points[0].count == sum(points[0].bucket_counts)
            snapshots += 1
    writer.join()
    metric = hist.collect(1)
    assert metric is not None
    final: list[Any] = list(metric.data.data_points)
    assert final[0].count == 50_000
    assert snapshots > 1


def test_locked_and_per_thread_points_share_one_series() -> None:
    """FastHistogram.record and ApiHistogram points for equal attributes form one point."""
    from otelperf._histograms import ApiHistogram

    hist = FastHistogram("h", "s", "d", BOUNDS)
    api = ApiHistogram(hist)
    attrs = {"a": 1}
    hist.record(0.5, tuple(attrs.items()), attrs)
    api.record(0.001, attrs)
    metric = hist.collect(1)
    assert metric is not None
    points: list[Any] = list(metric.data.data_points)
    assert len(points) == 1
    assert (points[0].count, points[0].min, points[0].max) == (2, 0.001, 0.5)


def test_api_histogram_overflow_keys_share_one_shard() -> None:
    """Keys past the series limit take no memory each: one overflow shard per thread."""
    from otelperf._histograms import _OVERFLOW_KEY, ApiHistogram

    hist = FastHistogram("h", "s", "d", BOUNDS)
    api = ApiHistogram(hist)
    for i in range(MAX_SERIES + 3000):
        api.record(0.01, {"i": i})
    assert len(hist._series[_OVERFLOW_KEY].shards) == 1
    assert len(api._local.shards) == MAX_SERIES
    counts = _series_counts(hist)
    assert counts[(("otel.metric.overflow", True),)] == 3000


def test_shards_of_ended_threads_are_folded_in() -> None:
    """After short-lived threads end, collection folds their shards in; totals stay exact."""
    import threading

    from otelperf._histograms import ApiHistogram

    hist = FastHistogram("h", "s", "d", BOUNDS)
    api = ApiHistogram(hist)
    attrs = {"pool": "main"}
    for batch in range(5):

        def work() -> None:
            for _ in range(100):
                api.record(0.02, attrs)

        threads = [threading.Thread(target=work) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        counts = _series_counts(hist)
        assert counts[(("pool", "main"),)] == (batch + 1) * 2000
    (series,) = hist._series.values()
    assert series.shards == []
    metric = hist.collect(1)
    assert metric is not None
    point: Any = metric.data.data_points[0]
    assert (point.count, point.min, point.max) == (10_000, 0.02, 0.02)
    assert point.sum == pytest.approx(0.02 * 10_000)
