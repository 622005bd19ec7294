"""RuntimeMetrics: process, filesystem and event-loop metrics through a real SDK provider."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    Sum,
)

from otelperf._errors import OtelperfError
from otelperf._instruments import REGISTRY
from otelperf.config._schema import RuntimeConfig
from otelperf.runtime import RuntimeMetrics
from otelperf.runtime._disk import mountpoint
from otelperf.runtime._gate import Gate
from otelperf.runtime._metrics import _BY_PROVIDER

PROCESS_SCOPE = "opentelemetry.instrumentation.system_metrics"
DELAY = "otelperf.asyncio.eventloop.delay"
USAGE = "system.filesystem.usage"
UTILIZATION = "system.filesystem.utilization"


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """An in-memory reader; collect with reader.get_metrics_data()."""
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    """A real SDK meter provider reading into ``reader``."""
    mp = MeterProvider(metric_readers=[reader])
    yield mp
    mp.shutdown()


def collect(reader: InMemoryMetricReader) -> dict[str, Metric]:
    """Every metric of one collection, by name."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: metric
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }


def scopes(reader: InMemoryMetricReader) -> dict[str, set[str]]:
    """Metric names of one collection, by instrumentation scope."""
    data = reader.get_metrics_data()
    found: dict[str, set[str]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            found.setdefault(sm.scope.name, set()).update(m.name for m in sm.metrics)
    return found


def values(metric: Metric) -> dict[tuple[tuple[str, Any], ...], Any]:
    """A Sum or Gauge's values by sorted attributes."""
    assert isinstance(metric.data, Sum | Gauge)
    return {tuple(sorted((p.attributes or {}).items())): p.value for p in metric.data.data_points}


def one_value(metric: Metric) -> Any:
    """The value of a metric with a single point and no attributes."""
    [(attrs, value)] = values(metric).items()
    assert attrs == ()
    return value


def histogram(metric: Metric) -> HistogramDataPoint:
    """The single point of a histogram."""
    assert isinstance(metric.data, Histogram)
    [point] = metric.data.data_points
    return point


def run(runtime: RuntimeMetrics, during: Callable[[], Awaitable[object]] | None = None) -> None:
    """Start ``runtime`` in a fresh loop, await ``during``, stop it."""

    async def main() -> None:
        await runtime.start()
        try:
            if during is not None:
                await during()
        finally:
            await runtime.stop()

    asyncio.run(main())


def config(**overrides: Any) -> RuntimeConfig:
    """A RuntimeConfig with everything off unless asked for."""
    return RuntimeConfig(**{"event_loop_lag": False, "process": False, **overrides})


# --- process -------------------------------------------------------------------


def test_process_metrics_present_with_plausible_values(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """process: true reports CPU, memory, threads, fds, context switches and GC by generation."""
    found: dict[str, Metric] = {}

    async def during() -> None:
        found.update(collect(reader))

    run(RuntimeMetrics(config(process=True), provider), during)

    assert one_value(found["process.memory.usage"]) > 1_000_000
    assert one_value(found["process.memory.virtual"]) >= one_value(found["process.memory.usage"])
    assert one_value(found["process.thread.count"]) >= 1
    if sys.platform != "win32":
        assert one_value(found["process.open_file_descriptor.count"]) >= 3
    cpu = values(found["process.cpu.time"])
    assert set(cpu) == {(("type", "user"),), (("type", "system"),)}
    assert sum(cpu.values()) > 0
    assert 0 <= one_value(found["process.cpu.utilization"]) <= 1
    switches = values(found["process.context_switches"])
    assert {dict(k)["type"] for k in switches} == {"voluntary", "involuntary"}
    collections = values(found["cpython.gc.collections"])
    generations = {dict(k)["cpython.gc.generation"] for k in collections}
    assert generations == set(range(len(gc.get_stats())))
    assert "cpython.gc.collected_objects" in found
    assert "cpython.gc.uncollectable_objects" in found


def test_process_metrics_are_process_level_and_declared(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """The instrumentor emits no system-wide series, and each metric matches its registry spec."""
    found: dict[str, Metric] = {}
    by_scope: dict[str, set[str]] = {}

    async def during() -> None:
        by_scope.update(scopes(reader))
        found.update(collect(reader))

    run(RuntimeMetrics(config(process=True), provider), during)

    emitted = by_scope[PROCESS_SCOPE]
    assert not {n for n in emitted if n.startswith(("system.", "process.runtime."))}
    for name in emitted:
        spec = REGISTRY[name]
        metric = found[name]
        assert (spec.unit, spec.component) == (metric.unit, "runtime"), name
        if isinstance(metric.data, Sum):
            kind = "counter" if metric.data.is_monotonic else "up_down_counter"
            assert spec.kind == f"observable_{kind}", name
        else:
            assert spec.kind == "observable_gauge", name
        for point in metric.data.data_points:
            assert set(point.attributes or {}) <= set(spec.attributes), name


def test_process_false_reports_no_process_metrics(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """process: false (and event_loop_lag: false) registers none of those instruments."""
    by_scope: dict[str, set[str]] = {}

    async def during() -> None:
        by_scope.update(scopes(reader))

    run(RuntimeMetrics(config(process=False, disk_paths=["/"]), provider), during)

    assert PROCESS_SCOPE not in by_scope
    assert USAGE in by_scope["otelperf"]
    assert DELAY not in by_scope["otelperf"]  # event_loop_lag: false


def test_missing_instrumentation_package_is_named(
    provider: MeterProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the system-metrics package, start() names it and the way out; nothing starts."""
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.system_metrics", None)
    runtime = RuntimeMetrics(config(process=True, event_loop_lag=True), provider)

    with pytest.raises(
        OtelperfError,
        match=r"opentelemetry-instrumentation-system-metrics.*"
        r"runtime\.process: false",
    ):
        asyncio.run(runtime.start())
    assert not runtime.started


# --- filesystem ------------------------------------------------------------------


def test_disk_usage_of_root_and_tmp_matches_shutil(
    provider: MeterProvider, reader: InMemoryMetricReader, tmp_path: Path
) -> None:
    """Each path's filesystem is reported under its mount point; the states add up to its size."""
    found: dict[str, Metric] = {}

    async def during() -> None:
        found.update(collect(reader))

    paths = ["/", str(tmp_path)]
    run(RuntimeMetrics(config(disk_paths=paths), provider), during)

    usage = values(found[USAGE])
    utilization = values(found[UTILIZATION])
    assert found[USAGE].unit == "By"
    assert found[UTILIZATION].unit == "1"
    for path in paths:
        mount = mountpoint(path)
        expected = shutil.disk_usage(path)
        by_state = {
            dict(k)["system.filesystem.state"]: v
            for k, v in usage.items()
            if dict(k)["system.filesystem.mountpoint"] == mount
        }
        assert set(by_state) == {"used", "free", "reserved"}
        assert sum(by_state.values()) == expected.total
        tolerance = max(64 * 2**20, expected.total // 1000)  # others write meanwhile
        assert abs(by_state["used"] - expected.used) <= tolerance
        assert abs(by_state["free"] - expected.free) <= tolerance
        ratio = utilization[(("system.filesystem.mountpoint", mount),)]
        assert ratio == pytest.approx(expected.used / (expected.used + expected.free), abs=0.01)
    # two paths on one filesystem make one series
    assert len(usage) == 3 * len({mountpoint(p) for p in paths})


def test_missing_path_is_skipped_and_logged_once(
    provider: MeterProvider,
    reader: InMemoryMetricReader,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A vanished or invalid path is skipped without error, logged once; the others still report."""
    missing = str(tmp_path / "gone")
    counts: list[int] = []

    async def during() -> None:
        for _ in range(3):
            counts.append(len(values(collect(reader)[USAGE])))

    caplog.set_level(logging.WARNING, logger="otelperf.runtime")
    run(RuntimeMetrics(config(disk_paths=[missing, "bad\0path", str(tmp_path)]), provider), during)

    assert counts == [3, 3, 3]
    warnings = [r.getMessage() for r in caplog.records if r.name == "otelperf.runtime"]
    assert len(warnings) == 2
    assert any("gone" in w and "skipped" in w for w in warnings)


def test_path_that_comes_back_is_reported_again(
    provider: MeterProvider, reader: InMemoryMetricReader, tmp_path: Path
) -> None:
    """A path that did not exist at startup is reported once it appears."""
    later = tmp_path / "later"
    counts: list[int] = []

    async def during() -> None:
        before = collect(reader).get(USAGE)
        counts.append(0 if before is None else len(values(before)))
        later.mkdir()
        counts.append(len(values(collect(reader)[USAGE])))

    run(RuntimeMetrics(config(disk_paths=[str(later)]), provider), during)

    assert counts == [0, 3]


# --- event loop ------------------------------------------------------------------


def test_blocked_loop_shows_as_delay(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    """Blocking the loop for 0.2 s once records one ~0.2 s delay among small ones."""
    points: list[HistogramDataPoint] = []

    async def during() -> None:
        await asyncio.sleep(0.1)
        time.sleep(0.2)  # noqa: ASYNC251 - the blocking call under test
        await asyncio.sleep(0.1)
        points.append(histogram(collect(reader)[DELAY]))

    run(RuntimeMetrics(config(event_loop_lag=True), provider, lag_interval=0.02), during)

    [point] = points
    assert 0.17 <= point.max <= 0.5
    assert point.count >= 6
    # everything but the blocked sample is timer jitter
    assert point.sum - point.max < 0.005 * point.count + 0.05


def test_idle_loop_records_small_delays(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """An idle loop records one small delay per interval."""
    points: list[HistogramDataPoint] = []

    async def during() -> None:
        await asyncio.sleep(0.3)
        points.append(histogram(collect(reader)[DELAY]))

    run(RuntimeMetrics(config(event_loop_lag=True), provider, lag_interval=0.02), during)

    [point] = points
    assert 8 <= point.count <= 16
    assert point.min >= 0
    assert point.max < 0.05
    metric = collect(reader)[DELAY]
    assert metric.unit == "s"
    assert isinstance(metric.data, Histogram)
    assert tuple(metric.data.data_points[0].explicit_bounds) == REGISTRY[DELAY].buckets


def test_stop_cancels_the_sampling(
    provider: MeterProvider, reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    """Sampling adds no task, starting twice samples once, and nothing is recorded after stop()."""
    tasks: list[int] = []
    counts: list[int] = []

    async def main() -> None:
        runtime = RuntimeMetrics(config(event_loop_lag=True), provider, lag_interval=0.01)
        await runtime.start()
        await runtime.start()  # idempotent
        tasks.append(len(asyncio.all_tasks()))
        await asyncio.sleep(0.1)
        await runtime.stop()
        counts.append(histogram(collect(reader)[DELAY]).count)
        await asyncio.sleep(0.05)
        counts.append(histogram(collect(reader)[DELAY]).count)
        await runtime.stop()  # idempotent

    caplog.set_level(logging.WARNING, logger="asyncio")
    asyncio.run(main())

    assert tasks == [1]  # main() alone
    assert 5 <= counts[0] <= 11  # one sample per 10 ms, not two
    assert counts[1] == counts[0]
    assert not [r for r in caplog.records if r.name == "asyncio"]


def test_loop_closed_without_stop_then_a_new_loop(
    provider: MeterProvider, reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop closed before stop() leaves no complaint; start() in a new loop samples that one."""
    runtime = RuntimeMetrics(config(event_loop_lag=True), provider, lag_interval=0.01)
    counts: list[int] = []

    async def start_and_wait() -> None:
        await runtime.start()
        await asyncio.sleep(0.05)
        counts.append(histogram(collect(reader)[DELAY]).count)

    caplog.set_level(logging.WARNING, logger="asyncio")
    asyncio.run(start_and_wait())  # the loop closes with the timer still set
    counts.append(histogram(collect(reader)[DELAY]).count)  # the timer is gone with it
    asyncio.run(start_and_wait())  # still started, yet sampling moves to the new loop
    asyncio.run(runtime.stop())

    assert counts[0] > 0
    assert counts[1] == counts[0]
    assert counts[2] > counts[1]
    assert not [r for r in caplog.records if r.name == "asyncio"]


def test_sampling_does_not_inherit_the_callers_context(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """A span active at startup is not attached to the delay samples (no stale exemplars)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    exemplars: list[int] = []

    async def main() -> None:
        runtime = RuntimeMetrics(config(event_loop_lag=True), provider, lag_interval=0.01)
        with tracer.start_as_current_span("startup"):
            assert trace.get_current_span().get_span_context().is_valid
            await runtime.start()
        await asyncio.sleep(0.05)
        await runtime.stop()
        exemplars.append(len(histogram(collect(reader)[DELAY]).exemplars))

    asyncio.run(main())

    assert exemplars == [0]


def test_lag_interval_must_be_positive(provider: MeterProvider) -> None:
    """A zero or negative lag_interval is refused at construction, naming the value."""
    with pytest.raises(ValueError, match="lag_interval must be greater than 0, got 0"):
        RuntimeMetrics(config(), provider, lag_interval=0)


# --- lifecycle -------------------------------------------------------------------


def test_start_stop_twice_with_fresh_providers() -> None:
    """Two lifespans in one process, each with its own provider, both get every metric."""

    def lifespan() -> dict[str, Metric]:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        found: dict[str, Metric] = {}

        async def during() -> None:
            await asyncio.sleep(0.05)
            found.update(collect(reader))

        run(RuntimeMetrics(RuntimeConfig(disk_paths=["/"]), provider, lag_interval=0.01), during)
        provider.shutdown()
        return found

    for found in (lifespan(), lifespan()):
        assert one_value(found["process.memory.usage"]) > 0
        assert USAGE in found
        assert histogram(found[DELAY]).count > 0


def test_two_apps_at_once_both_report() -> None:
    """Two RuntimeMetrics on two providers at the same time both report process metrics."""
    readers = [InMemoryMetricReader(), InMemoryMetricReader()]
    providers = [MeterProvider(metric_readers=[r]) for r in readers]
    found: list[dict[str, Metric]] = []

    async def main() -> None:
        runtimes = [RuntimeMetrics(config(process=True), p) for p in providers]
        for runtime in runtimes:
            await runtime.start()
        found.extend(collect(r) for r in readers)
        for runtime in runtimes:
            await runtime.stop()

    asyncio.run(main())
    for provider in providers:
        provider.shutdown()

    assert all(one_value(f["process.thread.count"]) >= 1 for f in found)


def test_restart_on_the_same_provider_follows_the_new_config(
    provider: MeterProvider, reader: InMemoryMetricReader, tmp_path: Path
) -> None:
    """Stopped reports nothing; a new start on the same provider reports its own config."""
    seen: list[dict[str, Metric]] = []

    async def during() -> None:
        seen.append(collect(reader))

    run(RuntimeMetrics(config(process=True, disk_paths=["/"]), provider), during)
    seen.append(collect(reader))  # stopped
    other = RuntimeMetrics(config(process=True, disk_paths=[str(tmp_path)]), provider)
    run(other, during)

    first, stopped, second = seen
    assert {"process.memory.usage", USAGE} <= set(first)
    assert not {"process.memory.usage", USAGE} & set(stopped)
    assert one_value(second["process.memory.usage"]) > 0
    mounts = {dict(k)["system.filesystem.mountpoint"] for k in values(second[USAGE])}
    assert mounts == {mountpoint(str(tmp_path))}


def test_provider_is_not_kept_alive(reader: InMemoryMetricReader) -> None:
    """The per-provider bookkeeping lets a dropped provider be garbage-collected."""
    provider = MeterProvider(metric_readers=[reader])
    run(RuntimeMetrics(RuntimeConfig(disk_paths=["/"]), provider, lag_interval=0.01))
    assert provider in _BY_PROVIDER
    provider.shutdown()
    alive = weakref.ref(provider)
    del provider
    gc.collect()
    assert alive() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_process_metrics_follow_a_fork(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """After fork(), the child reports its own process, not its parent's."""
    runtime = RuntimeMetrics(config(process=True), provider)
    asyncio.run(runtime.start())  # no lag task: nothing left running in the closed loop
    collect(reader)  # the instrumentor has read the parent
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            before = one_value(collect(reader)["process.open_file_descriptor.count"])
            files = [open(os.devnull) for _ in range(20)]  # noqa: SIM115
            after = one_value(collect(reader)["process.open_file_descriptor.count"])
            code = 0 if after - before == len(files) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    asyncio.run(runtime.stop())
    assert os.waitstatus_to_exitcode(status) == 0


# --- the gate ----------------------------------------------------------------------


def test_failing_callback_reports_nothing_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A gated callback that raises yields no observation, logs once, never raises."""
    gate = Gate()
    calls: list[int] = []

    def broken(options: CallbackOptions) -> Iterable[Observation]:
        calls.append(1)
        yield Observation(1)
        raise RuntimeError("psutil said no")

    [guarded] = gate.wrap("process.example", [broken])
    assert callable(guarded)
    assert list(guarded(CallbackOptions())) == []  # closed: not even called
    gate.open = True
    caplog.set_level(logging.WARNING, logger="otelperf.runtime")
    results = [list(guarded(CallbackOptions())) for _ in range(3)]

    assert results == [[], [], []]
    assert len(calls) == 3
    [record] = [r for r in caplog.records if r.name == "otelperf.runtime"]
    assert "process.example" in record.getMessage()
