"""Cache hits and stampedes: otelperf against raw redis-py, aiocache, cashews and cachetools.

Everything runs in one process, in interleaved rounds (each round runs every variant,
in shuffled order, for the same number of calls), so drift on a busy machine hits
them all alike; the figures are medians over rounds, and ratios compare variants of
the same rounds. otelperf runs with real telemetry: a TracerProvider with a
BatchSpanProcessor (to an exporter that counts and drops), a MeterProvider with an
InMemoryMetricReader; the recorded spans and points are counted and checked.

Part 1, memory hit: one key, 1 KiB JSON-like value, µs per hit.
Part 2, Redis hit: 1 KiB JSON value in the real Redis, µs per hit, against a raw
``redis.asyncio`` GET + ``json.loads`` (the floor), aiocache and cashews. otelperf is
measured under a sampled request span (every Redis read gets a span), under a request
that was sampled out (metrics only), and with ``span_threshold: 1ms`` (fast hits
counted in metrics, no span). The cost of one span through the SDK and through the
cache's own path (``otelperf._spans.SpanRecorder``, which builds the finished span
directly) and of one SDK histogram point are printed beside them.
Part 3, stampede: 100 concurrent callers on one cold key, origin 50 ms: origin calls and
wall time, for otelperf's single flight and lock (also across two processes), cashews'
``lock=True`` and aiocache's ``cached_stampede``.

    pip install -e ".[dev,bench]"          # the bench extra brings the peers
    python benchmarks/cache.py              # a couple of minutes
    python benchmarks/cache.py --quick      # about half a minute
    OTELPERF_BENCH_REDIS_URL=redis://host:6379/0 python benchmarks/cache.py

Goal checks print PASS/FAIL with their ratios and never change the exit status; a run
whose otelperf variant recorded no telemetry exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import SpanKind
from pydantic import TypeAdapter

from otelperf._component import ComponentTelemetry
from otelperf.cache import Cache, build_cache
from otelperf.config._schema import CacheConfig

REDIS_URL = os.environ.get("OTELPERF_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
VALUE = {"id": 42, "name": "green tea", "tags": ["loose", "organic"], "text": "x" * 900}
PIP_BENCH = 'pip install "otelperf[bench]"'
ORIGIN = 0.05
CALLERS = 100


class CountingExporter(SpanExporter):
    """Counts the spans a real BatchSpanProcessor hands over, then drops them."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class Setup:
    """Telemetry as an app has it: batch span export, a metric reader, request spans."""

    def __init__(self) -> None:
        self.exporter = CountingExporter()
        self.tracer_provider = TracerProvider(sampler=ALWAYS_ON)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = ComponentTelemetry(
            self.tracer_provider.get_tracer("otelperf"), self.meter_provider.get_meter("otelperf")
        )
        self.app_tracer = self.tracer_provider.get_tracer("app")
        unsampled = TracerProvider(sampler=ALWAYS_OFF)
        self.unsampled_tracer = unsampled.get_tracer("app")

    def sampled_request(self) -> Any:
        return self.app_tracer.start_as_current_span("GET /items/{id}", kind=SpanKind.SERVER)

    def unsampled_request(self) -> Any:
        return self.unsampled_tracer.start_as_current_span("GET /items/{id}")

    def points(self, name: str) -> int:
        data = self.reader.get_metrics_data()
        total = 0
        for rm in data.resource_metrics if data is not None else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            found: Any = getattr(point, "count", None)
                            total += int(found or getattr(point, "value", 0))
        return total


def cache_of(name: str, namespace: str, **config: Any) -> Cache:
    data = {"namespace": namespace, **config}
    return build_cache(name, TypeAdapter(CacheConfig).validate_python(data))


Variant = Callable[[], Awaitable[Any]]


async def product_of(pid: int) -> dict[str, Any]:
    """The origin the peers' decorators wrap."""
    return VALUE


def sync_product_of(pid: int) -> dict[str, Any]:
    """The origin cachetools wraps."""
    return VALUE


def counted_origin(counter: list[int]) -> Callable[[], Awaitable[dict[str, bool]]]:
    """A 50 ms origin that counts its calls in ``counter``."""

    async def origin() -> dict[str, bool]:
        counter[0] += 1
        await asyncio.sleep(ORIGIN)
        return {"ok": True}

    return origin


class Results:
    """Per-round µs per call of each variant; medians and paired ratios."""

    def __init__(self, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
        self.wall_rounds = wall
        self.wall = {k: statistics.median(v) for k, v in wall.items()}
        self.cpu = {k: statistics.median(v) for k, v in cpu.items()}

    def ratio(self, name: str, base: str) -> float:
        """Median over rounds of name/base within the same round (drift cancels out)."""
        pairs = zip(self.wall_rounds[name], self.wall_rounds[base], strict=True)
        return statistics.median(a / b for a, b in pairs)


async def interleave(
    variants: dict[str, tuple[Variant, Callable[[], Any]]], rounds: int, calls: int
) -> Results:
    """µs per call (wall, process CPU) of each variant in each of ``rounds`` shuffled rounds."""
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for fn, _ in variants.values():  # warm up
        for _ in range(min(calls, 200)):
            await fn()
    order = list(variants)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            fn, around = variants[name]
            with around():
                c0, t0 = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    await fn()
                t1, c1 = time.perf_counter(), time.process_time()
            wall[name].append((t1 - t0) / calls * 1e6)
            cpu[name].append((c1 - c0) / calls * 1e6)
    return Results(wall, cpu)


def table(title: str, results: Results, base: str) -> None:
    print(f"\n{title}")
    print(f"  medians over rounds; ratio: median of per-round ratios to {base!r}")
    print(f"  {'variant':<52} {'µs wall':>9} {'µs cpu':>9} {'ratio':>7}")
    for name in results.wall:
        print(
            f"  {name:<52} {results.wall[name]:9.1f} {results.cpu[name]:9.1f} "
            f"{results.ratio(name, base):7.2f}"
        )


def goal(label: str, ratio: float, limit: float) -> None:
    verdict = "PASS" if ratio <= limit else "FAIL"
    print(f"  goal {label}: {ratio:.2f}x (limit {limit}x) {verdict}")


def peer(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        print(f"  [skipped {module}: not installed; {PIP_BENCH}]")
        return None


# --- part 1: memory hits ----------------------------------------------------------------------


async def memory_part(setup: Setup, namespace: str, rounds: int, calls: int) -> dict[str, float]:
    cache = cache_of("mem", namespace, backend="memory")
    await cache.start(setup.telemetry)

    @cache.cached()
    async def product(pid: int) -> dict[str, Any]:
        return VALUE

    await product(42)
    variants: dict[str, tuple[Variant, Callable[[], Any]]] = {
        "otelperf @cached (memory, telemetry on)": (lambda: product(42), setup.sampled_request),
        "otelperf cache.get (memory)": (lambda: cache.get("k"), setup.sampled_request),
    }
    await cache.set("k", VALUE)
    aiocache = peer("aiocache")
    if aiocache is not None:
        amem = aiocache.Cache(aiocache.Cache.MEMORY)
        await amem.set("k", VALUE)

        a_product = aiocache.cached(ttl=300)(product_of)
        variants["aiocache memory get"] = (lambda: amem.get("k"), nullcontext)
        variants["aiocache @cached (memory)"] = (lambda: a_product(42), nullcontext)
    cashews = peer("cashews")
    if cashews is not None:
        cmem = cashews.Cache()
        cmem.setup("mem://")
        await cmem.set("k", VALUE)

        c_product = cmem(ttl="5m")(product_of)
        variants["cashews memory get"] = (lambda: cmem.get("k"), nullcontext)
        variants["cashews @cache (memory)"] = (lambda: c_product(42), nullcontext)
    cachetools = peer("cachetools")
    if cachetools is not None:
        ttl_cache: Any = cachetools.TTLCache(maxsize=10_000, ttl=300)

        t_product = cachetools.cached(ttl_cache)(sync_product_of)

        async def t_call() -> Any:
            return t_product(42)

        variants["cachetools @cached TTLCache (sync, in a coroutine)"] = (t_call, nullcontext)
    results = await interleave(variants, rounds, calls)
    base = "aiocache memory get" if "aiocache memory get" in variants else next(iter(variants))
    table("Part 1: memory hit (1 KiB value)", results, base)
    if base == "aiocache memory get":
        goal("memory hit <= 0.3x aiocache",
             results.ratio("otelperf @cached (memory, telemetry on)", base), 0.3)  # fmt: skip
    hits = cache.stats()["hits"]
    await cache.stop()
    if hits < rounds * calls:
        raise SystemExit("otelperf memory cache counted fewer hits than calls")
    return results.wall


# --- part 2: Redis hits -----------------------------------------------------------------------


def sdk_floor(setup: Setup, n: int = 5000) -> tuple[float, float, float]:
    """µs per child span (4 attributes) through the SDK and through otelperf's
    SpanRecorder (which the cache uses), and per SDK histogram point."""
    from otelperf._spans import SpanRecorder

    tracer = setup.telemetry.tracer
    recorder = SpanRecorder(tracer)
    if not recorder.direct:
        raise SystemExit("the cache's spans did not take SpanRecorder's direct path")
    hist = setup.telemetry.meter.create_histogram("bench.floor", unit="s")
    attrs: dict[str, str | bool | int] = {
        "cache.name": "r", "db.system.name": "redis", "cache.hit": True, "cache.item_size": 1,
    }  # fmt: skip
    with setup.sampled_request():
        t = time.perf_counter()
        for _ in range(n):
            tracer.start_span("cache.get", kind=SpanKind.CLIENT, attributes=attrs).end()
        span = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for _ in range(n):
            recorder.record("cache.get", SpanKind.CLIENT, attrs, time.time_ns())
        recorded = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for _ in range(n):
            hist.record(0.0002, {"cache.name": "r", "cache.operation": "get"})
        point = (time.perf_counter() - t) / n * 1e6
    return span, recorded, point


async def redis_part(setup: Setup, namespace: str, rounds: int, calls: int) -> None:
    import redis.asyncio as aredis

    raw = aredis.Redis.from_url(REDIS_URL)
    raw_key = f"{namespace}:raw"
    await raw.set(raw_key, json.dumps(VALUE))
    traced = cache_of("r", namespace, backend="redis", url=REDIS_URL)
    quiet = cache_of("r_threshold", namespace, backend="redis", url=REDIS_URL, span_threshold="1ms")
    tiered = cache_of("t", namespace, backend="tiered", url=REDIS_URL)
    for cache in (traced, quiet, tiered):
        await cache.start(setup.telemetry)

    @traced.cached()
    async def product(pid: int) -> dict[str, Any]:
        return VALUE

    @quiet.cached()
    async def product_quiet(pid: int) -> dict[str, Any]:
        return VALUE

    @tiered.cached()
    async def product_tiered(pid: int) -> dict[str, Any]:
        return VALUE

    for fn in (product, product_quiet, product_tiered):
        await fn(42)

    async def raw_get() -> Any:
        return json.loads(await raw.get(raw_key))  # type: ignore[arg-type]

    variants: dict[str, tuple[Variant, Callable[[], Any]]] = {
        "raw redis.asyncio GET + json.loads": (raw_get, nullcontext),
        "otelperf @cached redis, request sampled": (lambda: product(42), setup.sampled_request),
        "otelperf @cached redis, request sampled out": (
            lambda: product(42),
            setup.unsampled_request,
        ),
        "otelperf @cached redis, span_threshold 1ms": (
            lambda: product_quiet(42),
            setup.sampled_request,
        ),
        "otelperf cache.get redis, request sampled": (
            lambda: traced.get("direct"),
            setup.sampled_request,
        ),
        "otelperf @cached tiered (L1 hit)": (lambda: product_tiered(42), setup.sampled_request),
    }
    await traced.set("direct", VALUE)
    peers: list[Any] = []
    aiocache = peer("aiocache")
    if aiocache is not None:
        json_serializer = importlib.import_module("aiocache.serializers").JsonSerializer
        ared = aiocache.Cache(
            aiocache.Cache.REDIS, endpoint="127.0.0.1", port=6379, namespace=namespace,
            serializer=json_serializer(),
        )  # fmt: skip
        await ared.set("k", VALUE)
        peers.append(ared)
        variants["aiocache redis get (json)"] = (lambda: ared.get("k"), nullcontext)
    cashews = peer("cashews")
    if cashews is not None:
        cred = cashews.Cache()
        cred.setup(REDIS_URL)
        await cred.set(f"{namespace}:c", VALUE)

        c_product = cred(ttl="5m", prefix=namespace)(product_of)
        await c_product(42)
        peers.append(cred)
        variants["cashews redis get"] = (lambda: cred.get(f"{namespace}:c"), nullcontext)
        variants["cashews @cache (redis)"] = (lambda: c_product(42), nullcontext)
    spans_before = setup.exporter.exported
    results = await interleave(variants, rounds, calls)
    base = "raw redis.asyncio GET + json.loads"
    table("Part 2: Redis hit (1 KiB JSON value)", results, base)
    span_cost, recorded_cost, point_cost = sdk_floor(setup)
    print(f"  floor on this machine: one child span {span_cost:.1f} µs through the SDK, "
          f"{recorded_cost:.1f} µs through otelperf's SpanRecorder (the cache's path); one "
          f"SDK histogram point {point_cost:.1f} µs")  # fmt: skip
    for name, label in (
        ("otelperf @cached redis, request sampled", "request sampled"),
        ("otelperf @cached redis, request sampled out", "request sampled out"),
        ("otelperf @cached redis, span_threshold 1ms", "span_threshold 1ms"),
    ):
        goal(f"Redis hit, {label} <= 1.1x raw", results.ratio(name, base), 1.1)
    for cache in (traced, quiet, tiered):
        await cache.stop()
    setup.tracer_provider.force_flush()
    spans = setup.exporter.exported - spans_before
    points = setup.points("otelperf.cache.operation.duration")
    print(f"  telemetry recorded: {spans} spans, {points} operation.duration points")
    if spans == 0 or points == 0:
        raise SystemExit("otelperf recorded no telemetry: the figures above mean nothing")
    for client in peers:
        await client.close()
    await raw.delete(raw_key)
    await raw.aclose()


# --- part 3: stampedes ------------------------------------------------------------------------

_WORKER = """
import asyncio, json, sys, time
import redis
from pydantic import TypeAdapter
from opentelemetry import trace, metrics
from otelperf._component import ComponentTelemetry
from otelperf.cache import build_cache
from otelperf.config._schema import CacheConfig
cfg, counter = json.loads(sys.argv[1]), sys.argv[2]
cache = build_cache("fleet", TypeAdapter(CacheConfig).validate_python(cfg))
client = redis.Redis.from_url(cfg["url"])
@cache.cached(key="hot")
async def origin():
    client.incr(counter)
    await asyncio.sleep(%(origin)s)
    return {"ok": True}
async def main():
    await cache.start(ComponentTelemetry(trace.NoOpTracer(), metrics.NoOpMeter("x")))
    await cache.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    t = time.perf_counter()
    await asyncio.gather(*(origin() for _ in range(%(callers)s)))
    print(json.dumps({"ms": (time.perf_counter() - t) * 1000}), flush=True)
    await cache.stop()
asyncio.run(main())
"""


def two_processes(namespace: str) -> tuple[int, float]:
    """(origin calls, slowest process's wall ms) for lock mode across two processes."""
    import redis

    cfg = {"backend": "redis", "url": REDIS_URL, "namespace": namespace, "stampede": "lock"}
    counter = f"{namespace}:origin-calls"
    code = _WORKER % {"origin": ORIGIN, "callers": CALLERS}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg), counter],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("a stampede worker did not start")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        times = [json.loads(proc.communicate(timeout=60)[0])["ms"] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    client = redis.Redis.from_url(REDIS_URL)
    calls = int(client.get(counter) or 0)
    client.close()
    return calls, max(times)


async def stampede_part(setup: Setup, namespace: str, rounds: int) -> None:
    results: dict[str, list[tuple[int, float]]] = {}

    def record(name: str, calls: int, ms: float) -> None:
        results.setdefault(name, []).append((calls, ms))

    caches = {
        "otelperf single_flight (memory)": cache_of("s1", namespace, backend="memory"),
        "otelperf single_flight (redis)": cache_of("s2", namespace, backend="redis", url=REDIS_URL),
        "otelperf lock (redis)": cache_of(
            "s3", namespace, backend="redis", url=REDIS_URL, stampede="lock"
        ),
        "otelperf none (memory)": cache_of("s4", namespace, backend="memory", stampede="none"),
    }
    for cache in caches.values():
        await cache.start(setup.telemetry)
    aiocache = peer("aiocache")
    cashews = peer("cashews")
    cred = None
    if cashews is not None:
        cred = cashews.Cache()
        cred.setup(REDIS_URL)
    for r in range(rounds):
        for name, cache in caches.items():
            calls = [0]
            origin = cache.cached(key=f"hot{r}")(counted_origin(calls))
            t = time.perf_counter()
            await asyncio.gather(*(origin() for _ in range(CALLERS)))
            record(name, calls[0], (time.perf_counter() - t) * 1000)
        calls_, ms = two_processes(f"{namespace}:p{r}")
        record("otelperf lock (redis), two processes", calls_, ms)
        if cred is not None:
            ccalls = [0]
            c_origin = cred(ttl="1m", lock=True, prefix=f"{namespace}:cl{r}")(
                counted_origin(ccalls)
            )
            t = time.perf_counter()
            await asyncio.gather(*(c_origin() for _ in range(CALLERS)))
            record("cashews redis lock=True", ccalls[0], (time.perf_counter() - t) * 1000)
        if aiocache is not None:
            acalls = [0]
            a_origin = aiocache.cached_stampede(
                lease=2, ttl=60, cache=aiocache.Cache.REDIS, endpoint="127.0.0.1", port=6379,
                namespace=f"{namespace}:al{r}",
            )(counted_origin(acalls))  # fmt: skip
            t = time.perf_counter()
            await asyncio.gather(*(a_origin() for _ in range(CALLERS)))
            record("aiocache redis cached_stampede", acalls[0], (time.perf_counter() - t) * 1000)
            await a_origin.cache.close()
    print(
        f"\nPart 3: stampede, {CALLERS} concurrent callers, cold key, origin {ORIGIN * 1000:g} ms"
    )
    print(f"  {'variant':<44} {'origin calls':>13} {'wall ms (median)':>18}")
    for name, got in results.items():
        calls = sorted({c for c, _ in got})
        shown = str(calls[0]) if len(calls) == 1 else f"{calls[0]}..{calls[-1]}"
        print(f"  {name:<44} {shown:>13} {statistics.median(ms for _, ms in got):18.1f}")
    for name in ("otelperf single_flight (memory)", "otelperf lock (redis)",
                 "otelperf lock (redis), two processes"):  # fmt: skip
        calls_ok = all(c == 1 for c, _ in results[name])
        print(f"  goal exactly 1 origin call, {name}: {'PASS' if calls_ok else 'FAIL'}")
    lock_ms = statistics.median(ms for _, ms in results["otelperf lock (redis)"])
    print(f"  goal lock mode wall < 100 ms: {lock_ms:.1f} ms {'PASS' if lock_ms < 100 else 'FAIL'}")
    for cache in caches.values():
        await cache.stop()
    if cred is not None:
        await cred.close()


async def cleanup(namespace: str) -> None:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"*{namespace}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def amain(args: argparse.Namespace) -> None:
    setup = Setup()
    namespace = f"otelperf-bench-{uuid.uuid4().hex[:8]}"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, redis {REDIS_URL}")
    print(f"rounds {args.rounds}, memory calls/round {args.memory_calls}, "
          f"redis calls/round {args.redis_calls}")  # fmt: skip
    try:
        if "memory" in args.parts:
            await memory_part(setup, namespace, args.rounds, args.memory_calls)
        if "redis" in args.parts:
            await redis_part(setup, namespace, args.rounds, args.redis_calls)
        if "stampede" in args.parts:
            await stampede_part(setup, namespace, max(3, min(9, args.rounds // 3)))
    finally:
        await cleanup(namespace)
        setup.tracer_provider.shutdown()
        setup.meter_provider.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--memory-calls", type=int, default=5_000)
    parser.add_argument("--redis-calls", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--parts", default="memory,redis,stampede")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.memory_calls, args.redis_calls = 11, 2_000, 200
    args.parts = set(args.parts.split(","))
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
