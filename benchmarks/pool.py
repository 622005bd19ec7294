"""PostgreSQL pool overhead: otelperf's pool against raw psycopg_pool with the same settings.

Each operation is one checkout, ``SELECT 1`` and the return, run by 1, 8 and 64
concurrent tasks (or threads, for the sync pools). Every variant runs in this one
process, in rounds; each round runs every variant (shuffled order) for the same
number of operations, so drift on a noisy machine hits all of them alike. Reported per
variant: the median ops/s and CPU µs per operation (this process, all threads: the span
processor's included), and two ratios to raw psycopg_pool, each the median of the
per-round ratios: ops/s (wall clock) and CPU (raw's CPU per operation over the
variant's: the capacity ratio of a CPU-bound process, blind to waits for a core).

Variants (all with the same pool sizes, timeouts and max_waiting):

- ``raw``: psycopg_pool's ``AsyncConnectionPool.connection()`` and ``conn.execute``.
- ``otelperf``: otelperf's pool with telemetry as a ``Perf`` builds it (what a user
  gets): every query a sampled root span (a real ``BatchSpanProcessor`` to an exporter
  that counts and drops them), every metric point aggregated (``InMemoryMetricReader``,
  collected at the end of each round).
- ``otelperf, in a request``: the same, each task running under a sampled request span
  (as queries run in a web service): query spans are its children.
- ``otelperf, sampled out``: traces sampled out (``sample_ratio: 0``, a parent-based
  sampler): metrics only, the usual production shape at 1-10% sampling.
- ``app's own providers``: every query sampled, with an app-built ``TracerProvider``
  and ``MeterProvider`` handed to otelperf as they are (the SDK's own histograms).
- ``otelperf-noop``: the API's no-op tracer and meter: what otelperf's own code costs.

The goal (>= 0.9x raw, on both ratios, at every concurrency) is judged on ``otelperf``
and printed as PASS/FAIL; it never changes the exit status. The SDK floor (what the
SDK alone spends on one span and three histogram points, in a tight loop) is printed
beside otelperf's own floor for the same records. A variant whose telemetry was not
recorded (span and point counts checked against the operations run) makes the run
exit 1.

A second table repeats ``raw`` and ``otelperf`` with a checkout check on both sides:
psycopg_pool's ``check_connection`` (a round trip per checkout) against otelperf's
default check (a socket probe, a round trip only after ``check_idle``).

    python benchmarks/pool.py                 # 21 rounds x 800 ops per concurrency
    python benchmarks/pool.py --quick         # 5 rounds x 400 ops
    python benchmarks/pool.py --sync          # add the sync pools (threads)
    OTELPERF_BENCH_POSTGRES_DSN=postgresql://... python benchmarks/pool.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool
from opentelemetry import context, metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from otelperf._component import ComponentTelemetry
from otelperf.config._schema import PoolConfig
from otelperf.pool import Pool, build_pool

DSN = os.environ.get("OTELPERF_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
CONCURRENCY = (1, 8, 64)
GOAL = 0.9
SETTINGS: dict[str, Any] = {"min_size": 10, "max_size": 10, "timeout": 30.0, "max_waiting": 0}
"""Same on both sides; min = max so no variant pays for growing the pool in a round."""


class CountingExporter(SpanExporter):
    """Counts exported spans and drops them."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass
class Telemetry:
    """Providers of one variant, and how to check what they recorded."""

    telemetry: ComponentTelemetry
    exporter: CountingExporter | None = None
    reader: InMemoryMetricReader | None = None
    tracer_provider: TracerProvider | None = None
    shutdown: Callable[[], None] = lambda: None

    def recorded(self) -> tuple[int, int]:
        """(spans exported, db.client.operation.duration points) so far."""
        spans = 0
        if self.exporter is not None and self.tracer_provider is not None:
            self.tracer_provider.force_flush()
            spans = self.exporter.count
        points = 0
        if self.reader is not None:
            data = self.reader.get_metrics_data()
            for rm in data.resource_metrics if data else ():
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name == "db.client.operation.duration":
                            points += sum(getattr(p, "count", 0) for p in metric.data.data_points)
        return spans, points


def sdk_telemetry(sample_ratio: float) -> Telemetry:
    exporter = CountingExporter()
    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return Telemetry(
        ComponentTelemetry(tracer_provider.get_tracer("bench"), meter_provider.get_meter("bench")),
        exporter if sample_ratio > 0 else None,
        reader,
        tracer_provider,
        shutdown,
    )


def perf_telemetry(sample_ratio: float) -> Telemetry:
    """Telemetry as a Perf wires it: the SDK's spans, otelperf's plain-Python histograms."""
    import otelperf

    exporter = CountingExporter()
    reader = InMemoryMetricReader()
    perf = otelperf.load(
        {
            "version": 1,
            "service": {"name": "bench"},
            "telemetry": {
                "exporter": "none",
                "set_global": False,
                "traces": {"sample_ratio": sample_ratio},
            },
            "runtime": {"process": False, "event_loop_lag": False},
        },
        span_processors=[BatchSpanProcessor(exporter)],
        metric_readers=[reader],
    )
    perf.start()

    def shutdown() -> None:
        perf.shutdown()

    return Telemetry(
        ComponentTelemetry(perf.tracer, perf.meter),
        exporter if sample_ratio > 0 else None,
        reader,
        perf.tracer_provider,  # type: ignore[arg-type]  # an SDK TracerProvider here
        shutdown,
    )


def noop_telemetry() -> Telemetry:
    return Telemetry(
        ComponentTelemetry(
            trace.NoOpTracerProvider().get_tracer("bench"),
            metrics.NoOpMeterProvider().get_meter("bench"),
        )
    )


@dataclass
class Variant:
    name: str
    run: Callable[[int, int], Awaitable[None]]  # (concurrency, ops per task)
    telemetry: Telemetry | None = None
    spans_expected: bool = False
    ops: int = 0
    results: dict[int, list[tuple[float, float]]] = field(default_factory=dict)


def raw_async(pool: psycopg_pool.AsyncConnectionPool[Any]) -> Callable[[int, int], Awaitable[None]]:
    async def task(n: int) -> None:
        for _ in range(n):
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")

    async def run(concurrency: int, n: int) -> None:
        await asyncio.gather(*(task(n) for _ in range(concurrency)))

    return run


def otelperf_async(pool: Pool, in_request: bool = False) -> Callable[[int, int], Awaitable[None]]:
    async def task(n: int) -> None:
        if in_request:  # a task's own context: the attach ends with the task
            context.attach(trace.set_span_in_context(trace.NonRecordingSpan(request_span())))
        for _ in range(n):
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")

    async def run(concurrency: int, n: int) -> None:
        await asyncio.gather(*(task(n) for _ in range(concurrency)))

    return run


def request_span() -> trace.SpanContext:
    """A sampled request span's context, as the HTTP middleware would make current."""
    return trace.SpanContext(
        random.getrandbits(128),
        random.getrandbits(64),
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )


def threaded(
    executor: ThreadPoolExecutor, one: Callable[[], None]
) -> Callable[[int, int], Awaitable[None]]:
    async def run(concurrency: int, n: int) -> None:
        def task() -> None:
            for _ in range(n):
                one()

        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(executor, task) for _ in range(concurrency)))

    return run


async def measure(variants: list[Variant], rounds: int, total: int, label: str) -> None:
    for concurrency in CONCURRENCY:
        n = max(1, total // concurrency)
        for variant in variants:  # warm-up: connections, caches, code paths
            await variant.run(concurrency, max(1, n // 10))
        for _ in range(rounds):
            order = variants[:]
            random.shuffle(order)
            for variant in order:
                gc.collect()
                wall, cpu = time.perf_counter(), time.process_time()
                await variant.run(concurrency, n)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                ops = n * concurrency
                variant.ops += ops
                variant.results.setdefault(concurrency, []).append((ops / wall, cpu / ops * 1e6))
                if variant.telemetry is not None and variant.telemetry.reader is not None:
                    variant.telemetry.reader.get_metrics_data()  # collect, as an exporter would
        report(variants, concurrency, label)


def report(variants: list[Variant], concurrency: int, label: str) -> None:
    print(f"\n{label}, concurrency {concurrency}")
    print(
        f"  {'variant':26s} {'ops/s':>7s} {'CPU µs/op':>10s} {'ops/s ratio':>12s} "
        f"{'CPU ratio':>10s}"
    )
    wall, cpu = ratios(variants, concurrency)
    for variant in variants:
        rows = variant.results[concurrency]
        ops = statistics.median(r[0] for r in rows)
        cpu_us = statistics.median(r[1] for r in rows)
        print(
            f"  {variant.name:26s} {ops:7.0f} {cpu_us:10.1f} {wall[variant.name]:12.3f} "
            f"{cpu[variant.name]:10.3f}"
        )


def ratios(variants: list[Variant], concurrency: int) -> tuple[dict[str, float], dict[str, float]]:
    """Per variant, the median over rounds of its ops/s ratio and CPU ratio to the first.

    Ratios are taken within each round, then the median across rounds, so drift on a
    shared machine (which hits a whole round) cancels out. The CPU ratio is raw's CPU
    per operation over the variant's: the throughput ratio of a CPU-bound process,
    blind to the time spent waiting for a core that other work was using.
    """
    base = variants[0].results[concurrency]
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for variant in variants:
        pairs = list(zip(variant.results[concurrency], base, strict=True))
        wall[variant.name] = statistics.median(o[0] / b[0] for o, b in pairs)
        cpu[variant.name] = statistics.median(b[1] / o[1] for o, b in pairs)
    return wall, cpu


def verdict(variants: list[Variant], name: str, *, goal: bool = False, label: str = "") -> str:
    """One summary line: ops/s and CPU ratios per concurrency; PASS/FAIL when ``goal``."""
    parts = []
    worst = float("inf")
    for concurrency in CONCURRENCY:
        wall, cpu = ratios(variants, concurrency)
        worst = min(worst, wall[name], cpu[name])
        parts.append(f"c={concurrency}: {wall[name]:.2f}x ops/s {cpu[name]:.2f}x CPU")
    mark = ("PASS" if worst >= GOAL else "FAIL") if goal else "    "
    tail = f"  (goal >= {GOAL}x)" if goal else ""
    return f"{mark} {label or name:26s} " + "; ".join(parts) + tail


def sdk_floor(iterations: int = 20000) -> float:
    """CPU µs the SDK alone spends on what one operation records (full telemetry).

    One CLIENT span with the attributes otelperf sets on ``SELECT 1``, one
    ``db.client.operation.duration`` point (same attributes) and the two checkout
    points (wait_time, use_time), on providers set up as the ``otelperf`` variant's.
    """
    telemetry = sdk_telemetry(1.0)
    tracer, meter = telemetry.telemetry.tracer, telemetry.telemetry.meter
    duration = meter.create_histogram("floor.duration", unit="s")
    wait = meter.create_histogram("floor.wait", unit="s")
    use = meter.create_histogram("floor.use", unit="s")
    span_attributes: dict[str, Any] = {
        "db.system.name": "postgresql",
        "db.namespace": "test",
        "server.address": "127.0.0.1",
        "server.port": 5432,
        "db.operation.name": "SELECT",
        "db.query.summary": "SELECT",
    }
    metric_attributes = {k: v for k, v in span_attributes.items() if k != "db.query.summary"}
    pool_attributes = {"db.client.connection.pool.name": "main"}
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(iterations):
            wait.record(0.0001, pool_attributes)
            span = tracer.start_span(
                "SELECT", kind=trace.SpanKind.CLIENT, attributes=span_attributes
            )
            span.end()
            duration.record(0.0002, metric_attributes)
            use.record(0.0003, pool_attributes)
        best = min(best, (time.process_time() - started) / iterations * 1e6)
    telemetry.shutdown()
    return best


def otelperf_floor(iterations: int = 20000) -> float:
    """CPU µs otelperf's own recording spends on the same records as :func:`sdk_floor`.

    The span through :class:`otelperf._spans.SpanRecorder` on a Perf-built provider,
    the three points through the plain-Python histograms Perf binds for components.
    """
    from otelperf._histograms import ApiHistogram, FastHistogram
    from otelperf._instruments import SECONDS_BUCKETS
    from otelperf._spans import SpanRecorder

    telemetry = perf_telemetry(1.0)
    recorder = SpanRecorder(telemetry.telemetry.tracer)
    assert recorder.direct, "Perf's provider should take the direct span path"
    duration, wait, use = (
        ApiHistogram(FastHistogram(name, "s", "", SECONDS_BUCKETS)) for name in "duw"
    )
    span_attributes: dict[str, Any] = {
        "db.system.name": "postgresql",
        "db.namespace": "test",
        "server.address": "127.0.0.1",
        "server.port": 5432,
        "db.operation.name": "SELECT",
        "db.query.summary": "SELECT",
    }
    metric_attributes = {k: v for k, v in span_attributes.items() if k != "db.query.summary"}
    pool_attributes = {"db.client.connection.pool.name": "main"}
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(iterations):
            wait.record(0.0001, pool_attributes)
            start = time.time_ns()
            recorder.record("SELECT", trace.SpanKind.CLIENT, span_attributes, start)
            duration.record(0.0002, metric_attributes)
            use.record(0.0003, pool_attributes)
        best = min(best, (time.process_time() - started) / iterations * 1e6)
    telemetry.shutdown()
    return best


def check_recorded(variants: list[Variant]) -> bool:
    ok = True
    for variant in variants:
        if variant.telemetry is None or variant.telemetry.reader is None:
            continue
        spans, points = variant.telemetry.recorded()
        if points < variant.ops or (variant.spans_expected and spans < variant.ops):
            print(
                f"  {variant.name}: recorded {spans} spans and {points} duration points for "
                f"{variant.ops} operations: FAILED"
            )
            ok = False
        else:
            print(
                f"  {variant.name}: {spans} spans, {points} duration points for "
                f"{variant.ops} operations"
            )
    return ok


async def async_suite(rounds: int, total: int, *, check: bool) -> tuple[list[Variant], list[Any]]:
    raw_kwargs: dict[str, Any] = {}
    if check:
        raw_kwargs["check"] = psycopg_pool.AsyncConnectionPool.check_connection
    raw = psycopg_pool.AsyncConnectionPool(DSN, open=False, **SETTINGS, **raw_kwargs)
    await raw.open(wait=True)
    variants = [Variant("raw psycopg_pool", raw_async(raw))]
    pools: list[Any] = [raw]
    kinds: list[tuple[str, Callable[[], Telemetry], bool, bool]] = [
        ("otelperf", lambda: perf_telemetry(1.0), True, False),
    ]
    if not check:
        kinds += [
            ("otelperf, in a request", lambda: perf_telemetry(1.0), True, True),
            ("otelperf, sampled out", lambda: perf_telemetry(0.0), False, False),
            ("app's own providers", lambda: sdk_telemetry(1.0), True, False),
            ("otelperf-noop", noop_telemetry, False, False),
        ]
    for name, make, spans, in_request in kinds:
        telemetry = make()
        config = PoolConfig.model_validate(
            {"conninfo": DSN, "check": check, **SETTINGS, "timeout": "30s"}
        )
        pool = build_pool(f"bench-{name}", config)
        await pool.start(telemetry.telemetry)
        pools.append(pool)
        variants.append(Variant(name, otelperf_async(pool, in_request), telemetry, spans))
    label = "async, checkout check on both sides" if check else "async, same settings"
    await measure(variants, rounds, total, label)
    return variants, pools


async def sync_suite(rounds: int, total: int) -> tuple[list[Variant], list[Any]]:
    executor = ThreadPoolExecutor(max_workers=max(CONCURRENCY))
    raw = psycopg_pool.ConnectionPool(DSN, open=False, **SETTINGS)
    raw.open(wait=True)

    def raw_one() -> None:
        with raw.connection() as conn:
            conn.execute("SELECT 1")

    variants = [Variant("raw psycopg_pool (sync)", threaded(executor, raw_one))]
    pools: list[Any] = []
    for name, telemetry, spans in (
        ("otelperf (sync)", perf_telemetry(1.0), True),
        ("otelperf-noop (sync)", noop_telemetry(), False),
    ):
        config = PoolConfig.model_validate(  # lazy: only the sync twin opens
            {"conninfo": DSN, "check": False, "open": "lazy", **SETTINGS, "timeout": "30s"}
        )
        pool = build_pool(f"bench-{len(pools)}", config)
        await pool.start(telemetry.telemetry)
        pools.append(pool)

        def ours_one(pool: Pool = pool) -> None:
            with pool.sync.connection() as conn:
                conn.execute("SELECT 1")

        variants.append(Variant(name, threaded(executor, ours_one), telemetry, spans))
    await measure(variants, rounds, total, "sync (threads), same settings")
    executor.shutdown()
    raw.close()
    return variants, pools


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds x 400 operations")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--ops", type=int, default=None, help="operations per variant and round")
    parser.add_argument("--sync", action="store_true", help="also measure the sync pools")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 21)
    total = args.ops or (400 if args.quick else 800)
    try:
        psycopg.connect(DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        print(f"PostgreSQL at {DSN} is not reachable: {exc}", file=sys.stderr)
        return 2
    print(
        f"otelperf pool benchmark: {rounds} rounds x {total} operations per variant and "
        f"concurrency; Python {platform.python_version()}, psycopg {psycopg.__version__}, "
        f"psycopg_pool {psycopg_pool.__version__}, {os.cpu_count()} CPUs"
    )
    print(f"settings (both sides): {SETTINGS}")
    failed = False
    verdicts: list[str] = []

    variants, pools = await async_suite(rounds, total, check=False)
    print("\nrecorded telemetry:")
    failed |= not check_recorded(variants)
    floor, own = sdk_floor(), otelperf_floor()
    print(
        f"\nfloor (1 span + 3 histogram points, tight loop): the SDK's {floor:.1f} CPU µs/op, "
        f"otelperf's (SpanRecorder, its histograms) {own:.1f}"
    )
    for concurrency in CONCURRENCY:
        raw_cpu = statistics.median(r[1] for r in variants[0].results[concurrency])
        ours = statistics.median(
            r[1] for r in next(v for v in variants if v.name == "otelperf").results[concurrency]
        )
        print(
            f"  c={concurrency}: raw {raw_cpu:.0f} CPU µs/op, otelperf {ours:.0f} "
            f"(+{ours - raw_cpu:.0f}); otelperf's floor alone would cap the CPU ratio at "
            f"{raw_cpu / (raw_cpu + own):.2f}x"
        )
    for name in (
        "otelperf",
        "otelperf, in a request",
        "otelperf, sampled out",
        "app's own providers",
        "otelperf-noop",
    ):
        verdicts.append(verdict(variants, name, goal=name == "otelperf"))
    await close_all(pools, variants)

    variants, pools = await async_suite(rounds, total, check=True)
    verdicts.append(verdict(variants, "otelperf", goal=True, label="otelperf, check on both"))
    await close_all(pools, variants)

    if args.sync:
        variants, pools = await sync_suite(rounds, total)
        failed |= not check_recorded(variants)
        for name in ("otelperf (sync)", "otelperf-noop (sync)"):
            verdicts.append(verdict(variants, name))
        await close_all(pools, variants)

    print("\nratios to raw psycopg_pool (medians of per-round ratios):")
    for line in verdicts:
        print(" ", line)
    return 1 if failed else 0


async def close_all(pools: list[Any], variants: list[Variant]) -> None:
    for pool in pools:
        if isinstance(pool, Pool):
            await pool.stop()
        elif isinstance(pool, psycopg_pool.AsyncConnectionPool):
            await pool.close()
    for variant in variants:
        if variant.telemetry is not None:
            variant.telemetry.shutdown()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
