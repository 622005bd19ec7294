"""HTTP middleware overhead: otelperf against the official OpenTelemetry ASGI middleware and
the two common Prometheus middlewares, on the same Starlette app.

Part 1, in-process: every variant gets its own fresh app and providers; requests go
straight through the ASGI interface (``otelperf.testing.asgi_request``), in rounds, each
round running every variant (in shuffled order) for the same number of requests, so
drift on a noisy machine hits them all alike. Reported: the median µs/request over the
rounds, the cost added over the bare app (median of the per-round differences), and the
floor — what the SDK itself spends to start and end one span and record one histogram
point, measured alone with otelperf's own tracer and meter setup. Every variant must
really have recorded its telemetry (spans reach a real ``BatchSpanProcessor`` whose
exporter counts and drops them, metric points land in an ``InMemoryMetricReader``,
Prometheus samples in their registry), or the run fails loudly.

Part 2, served: each variant runs under uvicorn (1 worker) on loopback, loaded by
``wrk``; the RPS of each is reported as a ratio to the bare app's RPS of the same round.

    pip install "otelperf[bench]"   # the peers: OTel ASGI middleware, Prometheus middlewares
    apt-get install -y wrk          # for part 2
    python benchmarks/http_overhead.py              # full run (a few minutes)
    python benchmarks/http_overhead.py --quick      # short run
    python benchmarks/http_overhead.py --no-wrk     # in-process part only
    python benchmarks/http_overhead.py --profile otelperf   # cProfile one variant's requests

A variant whose package is missing is skipped with the pip line that brings it. Goal
checks print PASS/FAIL and never change the exit status; a variant that did not record
its telemetry does (exit 1), since its figures would mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import pstats
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import otelperf
from otelperf.testing import asgi_request

ASGIApp = Callable[..., Any]

PATH = "/items/42"
ROUTE = "/items/{item_id:int}"
TELEMETRY_PATH = "/_bench/telemetry"
VARIANT_ENV = "OTELPERF_BENCH_VARIANT"
CLOCKS = {"cpu": "process CPU clock", "wall": "wall clock"}
HERE = os.path.dirname(os.path.abspath(__file__))

PIP_OTEL_ASGI = 'pip install "opentelemetry-instrumentation-asgi>=0.51b0"'
PIP_INSTRUMENTATOR = 'pip install "prometheus-fastapi-instrumentator>=7.0"'
PIP_STARLETTE_EXPORTER = 'pip install "starlette-exporter>=0.23"'


class MissingPackageError(Exception):
    """A variant's package is not installed; the message is the pip line that fixes it."""


def _require(module: str, pip_line: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingPackageError(f"{module} is not installed ({exc}); {pip_line}") from None


# --- the app under test ---------------------------------------------------------------


async def item(request: Request) -> JSONResponse:
    item_id = request.path_params["item_id"]
    return JSONResponse({"item_id": item_id, "name": f"widget {item_id}", "price": 9.5})


async def telemetry_counts(request: Request) -> JSONResponse:
    """What the served variant recorded so far (part 2 reads it after wrk finished)."""
    built = _SERVED
    if built is None:
        return JSONResponse({"error": "not a served benchmark app"}, status_code=500)
    counts = built.count()
    return JSONResponse({"spans": counts.spans, "requests": counts.requests})


def make_app(middleware: Sequence[Middleware] = ()) -> Starlette:
    routes = [Route(ROUTE, item), Route(TELEMETRY_PATH, telemetry_counts)]
    return Starlette(routes=routes, middleware=list(middleware))


# --- telemetry sinks ------------------------------------------------------------------


class DroppingSpanExporter(SpanExporter):
    """Counts the spans a real BatchSpanProcessor hands over, then drops them."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)  # only the processor's one worker thread writes
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def histogram_count(reader: InMemoryMetricReader, *names: str) -> int:
    """Points recorded so far in the histogram with the first of ``names`` found."""
    data = reader.get_metrics_data()
    counts: dict[str, int] = {}
    if data is not None:
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name in names:
                        total = sum(getattr(p, "count", 0) for p in metric.data.data_points)
                        counts[metric.name] = counts.get(metric.name, 0) + total
    return next((counts[n] for n in names if n in counts), 0)


def prometheus_count(registry: Any, sample: str) -> int:
    """Sum of the samples called ``sample`` (over all label sets) in a Prometheus registry."""
    return int(sum(s.value for m in registry.collect() for s in m.samples if s.name == sample))


# --- variants -------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """What a variant recorded: exported spans and requests counted by its metrics."""

    spans: int | None  # None: the variant records no spans at all
    requests: int | None  # None: the variant records nothing (bare)


@dataclass
class Built:
    """One fresh instance of a variant: its app, how to count its telemetry, how to close it."""

    app: ASGIApp
    count: Callable[[], Counts]
    close: Callable[[], object] = lambda: None
    start: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    build: Callable[[bool], Built]  # argument: served (uvicorn runs the lifespan)
    spans_per_request: int | None  # None: records no spans
    modules: tuple[tuple[str, str], ...] = ()  # (module, pip line) it needs

    def missing(self) -> str | None:
        for module, pip_line in self.modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:
                found = False
            if not found:
                return f"{module} is not installed; {pip_line}"
        return None


def build_bare(served: bool) -> Built:
    return Built(make_app(), lambda: Counts(None, None))


def _otel_asgi(exclude_spans: list[str] | None) -> Built:
    asgi = _require("opentelemetry.instrumentation.asgi", PIP_OTEL_ASGI)
    exporter = DroppingSpanExporter()
    # The SDK at its defaults: default sampler, BatchSpanProcessor with default limits,
    # default aggregations. Only the exporter is a cheap sink.
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    app = asgi.OpenTelemetryMiddleware(
        make_app(),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        exclude_spans=exclude_spans,
    )

    def count() -> Counts:
        tracer_provider.force_flush()
        # Old semconv by default (http.server.duration, ms); stable with the opt-in.
        requests = histogram_count(reader, "http.server.request.duration", "http.server.duration")
        return Counts(exporter.exported, requests)

    def close() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return Built(app, count, close)


def build_otel_asgi(served: bool) -> Built:
    return _otel_asgi(None)


def build_otel_asgi_server_span_only(served: bool) -> Built:
    return _otel_asgi(["receive", "send"])


def build_instrumentator(served: bool) -> Built:
    pfi = _require("prometheus_fastapi_instrumentator", PIP_INSTRUMENTATOR)
    prometheus_client = _require("prometheus_client", PIP_INSTRUMENTATOR)
    registry = prometheus_client.CollectorRegistry()
    app = make_app()
    pfi.Instrumentator(registry=registry).instrument(app)
    return Built(app, lambda: Counts(None, prometheus_count(registry, "http_requests_total")))


_prefixes = itertools.count()


def build_starlette_exporter(served: bool) -> Built:
    exporter = _require("starlette_exporter", PIP_STARLETTE_EXPORTER)
    prometheus_client = _require("prometheus_client", PIP_STARLETTE_EXPORTER)
    # Its metrics live in the global registry, cached per name on the class: a prefix
    # of its own gives every instance fresh metrics.
    prefix = f"bench{next(_prefixes)}"
    middleware = Middleware(exporter.PrometheusMiddleware, prefix=prefix, app_name="bench")
    app = make_app([middleware])
    sample = f"{prefix}_requests_total"
    return Built(app, lambda: Counts(None, prometheus_count(prometheus_client.REGISTRY, sample)))


def otelperf_config(sample_ratio: float, served: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "version": 1,
        "service": {"name": "http-overhead-bench"},
        "telemetry": {
            "exporter": "none",
            "set_global": False,
            "traces": {"sample_ratio": sample_ratio},
        },
    }
    if not served:
        # Served, they stay at their defaults (what perf.wrap gives a user): they cost a
        # timer per interval, nothing per request.
        config["runtime"] = {"process": False, "event_loop_lag": False}
    return config


def _otelperf(sample_ratio: float, served: bool) -> Built:
    exporter = DroppingSpanExporter()
    reader = InMemoryMetricReader()
    perf = otelperf.load(
        otelperf_config(sample_ratio, served),
        span_processors=[BatchSpanProcessor(exporter)],
        metric_readers=[reader],
    )
    app = perf.wrap(make_app())

    def count() -> Counts:
        if perf.started:
            perf.tracer_provider.force_flush()  # type: ignore[attr-defined]
        requests = histogram_count(reader, "http.server.request.duration")
        return Counts(exporter.exported, requests)

    return Built(app, count, close=perf.shutdown, start=perf.start)


def build_otelperf(served: bool) -> Built:
    return _otelperf(1.0, served)


def build_otelperf_sampled_out(served: bool) -> Built:
    return _otelperf(0.0, served)


_OTEL = (("opentelemetry.instrumentation.asgi", PIP_OTEL_ASGI),)
BARE = Variant("bare", "bare", build_bare, None)
OTEL_DEFAULT = Variant("otel", "otel-asgi (SDK defaults)", build_otel_asgi, 3, _OTEL)
OTEL_EXCLUDE = Variant(
    "otel-server-span",
    'otel-asgi exclude_spans=["receive","send"]',
    build_otel_asgi_server_span_only,
    1,
    _OTEL,
)
INSTRUMENTATOR = Variant(
    "instrumentator",
    "prometheus-fastapi-instrumentator",
    build_instrumentator,
    None,
    (("prometheus_fastapi_instrumentator", PIP_INSTRUMENTATOR),),
)
STARLETTE_EXPORTER = Variant(
    "starlette-exporter",
    "starlette-exporter",
    build_starlette_exporter,
    None,
    (("starlette_exporter", PIP_STARLETTE_EXPORTER),),
)
OTELPERF = Variant("otelperf", "otelperf traces+metrics", build_otelperf, 1)
OTELPERF_SAMPLED_OUT = Variant(
    "otelperf-sampled-out", "otelperf traces sampled out", build_otelperf_sampled_out, 0
)
VARIANTS = (
    BARE,
    OTEL_DEFAULT,
    OTEL_EXCLUDE,
    INSTRUMENTATOR,
    STARLETTE_EXPORTER,
    OTELPERF,
    OTELPERF_SAMPLED_OUT,
)
BY_KEY = {v.key: v for v in VARIANTS}
PROMETHEUS = (INSTRUMENTATOR, STARLETTE_EXPORTER)


def check_counts(variant: Variant, counts: Counts, requests: int, slack: int = 0) -> str | None:
    """None when ``counts`` show every request recorded, else what is wrong.

    ``slack``: extra requests the server may have answered that the client never
    counted (wrk stops with requests in flight).
    """
    problems = []
    if variant is not BARE:
        got = counts.requests or 0
        if not requests <= got <= requests + slack:
            problems.append(f"metrics counted {got} requests, expected {requests}")
    expected_spans = None
    if variant.spans_per_request is not None:
        expected_spans = variant.spans_per_request * requests
    got_spans = counts.spans
    if expected_spans is not None and got_spans is not None:
        if expected_spans == 0 and got_spans != 0:
            problems.append(f"{got_spans} spans exported, expected none (sampled out)")
        elif expected_spans and got_spans == 0:
            problems.append(f"no span exported, expected {expected_spans}")
    return "; ".join(problems) or None


def describe_counts(variant: Variant, counts: Counts, requests: int) -> str:
    parts = []
    if variant.spans_per_request is not None:
        expected = variant.spans_per_request * requests
        parts.append(f"spans {counts.spans}/{expected}")
        if counts.spans is not None and counts.spans < expected:
            parts[-1] += f" ({expected - counts.spans} dropped by the batch processor)"
    if counts.requests is not None:
        parts.append(f"requests {counts.requests}/{requests}")
    return ", ".join(parts) or "nothing to record"


# --- part 1: in-process ---------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """µs per item, on the process CPU clock and on the wall clock."""

    cpu: float
    wall: float


class Clock:
    """Both clocks, started together.

    CPU time is the process's, all threads included (the batch span processor's
    worker too): on a shared, busy machine it leaves out the time the process
    waited for a core, which is noise, and keeps everything the telemetry costs.
    """

    def __init__(self) -> None:
        self.cpu = time.process_time()
        self.wall = time.perf_counter()

    def per_item(self, n: int) -> Timing:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return Timing(cpu / n * 1e6, wall / n * 1e6)


class Floor:
    """The SDK's own cost per request: one span started and ended, one histogram point.

    Built like otelperf builds its telemetry (same config, a Perf, its tracer and
    meter, a batch processor and an in-memory reader), with the attribute sets the
    middleware uses on the span and on the duration point.
    """

    label = "floor: SDK 1 span + 1 histogram point"

    def __init__(self) -> None:
        self.exporter = DroppingSpanExporter()
        self.reader = InMemoryMetricReader()
        self.perf = otelperf.load(
            otelperf_config(1.0, served=False),
            span_processors=[BatchSpanProcessor(self.exporter)],
            metric_readers=[self.reader],
        )
        self.perf.start()
        self.histogram = self.perf.meter.create_histogram("bench.floor.duration", unit="s")
        self.span_attrs = {
            "http.request.method": "GET",
            "url.scheme": "http",
            "url.path": PATH,
            "network.protocol.version": "1.1",
            "client.address": "127.0.0.1",
        }
        self.point_attrs: dict[str, str | int] = {
            "http.request.method": "GET",
            "url.scheme": "http",
            "network.protocol.version": "1.1",
            "http.response.status_code": 200,
            "http.route": "/items/{item_id}",
        }
        self.runs = 0

    def run(self, n: int) -> Timing:
        """Time ``n`` of (span + point)."""
        tracer, histogram = self.perf.tracer, self.histogram
        span_attrs, point_attrs, server = self.span_attrs, self.point_attrs, SpanKind.SERVER
        clock = Clock()
        for _ in range(n):
            span = tracer.start_span("GET /items/{item_id}", kind=server, attributes=span_attrs)
            span.end()
            histogram.record(0.01, point_attrs)
        self.runs += n
        return clock.per_item(n)

    def check(self) -> str | None:
        self.perf.tracer_provider.force_flush()  # type: ignore[attr-defined]
        points = histogram_count(self.reader, "bench.floor.duration")
        if points != self.runs or self.exporter.exported == 0:
            return f"floor recorded {self.exporter.exported} spans, {points} points of {self.runs}"
        return None

    def close(self) -> None:
        self.perf.shutdown()


async def timed_requests(app: ASGIApp, n: int) -> Timing:
    """Time ``n`` sequential in-process requests."""
    failed = 0
    clock = Clock()
    for _ in range(n):
        response = await asgi_request(app, "GET", PATH)
        if response.status != 200:
            failed += 1
    timing = clock.per_item(n)
    if failed:
        raise RuntimeError(f"{failed} of {n} requests did not answer 200")
    return timing


@dataclass
class Samples:
    """Per-round µs/request of each variant (key "floor" for the floor), on one clock."""

    by_key: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.by_key.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return statistics.median(self.by_key[key])

    def iqr(self, key: str) -> tuple[float, float]:
        values = self.by_key[key]
        if len(values) < 2:
            return values[0], values[0]
        q = statistics.quantiles(values, n=4)
        return q[0], q[2]

    def added(self, key: str, base: str = "bare") -> float:
        """Median over rounds of (variant - bare) in the same round."""
        pairs = zip(self.by_key[key], self.by_key[base], strict=True)
        return statistics.median(v - b for v, b in pairs)


async def run_in_process(
    variants: Sequence[Variant], rounds: int, requests: int, warmup: int
) -> tuple[dict[str, Samples], dict[str, str], bool]:
    built = {v.key: v.build(False) for v in variants}
    for b in built.values():
        b.start()
    floor = Floor()
    samples = {"cpu": Samples(), "wall": Samples()}
    try:
        for v in variants:
            await timed_requests(built[v.key].app, warmup)
        floor.run(warmup)
        keys = [v.key for v in variants] + ["floor"]
        for _ in range(rounds):
            random.shuffle(keys)
            for key in keys:
                gc.collect()  # no variant pays for the garbage of the one before
                if key == "floor":
                    timing = floor.run(requests)
                else:
                    timing = await timed_requests(built[key].app, requests)
                samples["cpu"].add(key, timing.cpu)
                samples["wall"].add(key, timing.wall)
        total = warmup + rounds * requests
        notes: dict[str, str] = {}
        ok = True
        for v in variants:
            counts = built[v.key].count()
            problem = check_counts(v, counts, total)
            notes[v.key] = describe_counts(v, counts, total)
            if problem:
                ok = False
                notes[v.key] = f"TELEMETRY CHECK FAILED: {problem}"
        problem = floor.check()
        notes["floor"] = (
            f"TELEMETRY CHECK FAILED: {problem}"
            if problem
            else f"spans {floor.exporter.exported}/{floor.runs}, points {floor.runs}"
        )
        ok = ok and problem is None
        return samples, notes, ok
    finally:
        for b in built.values():
            b.close()
        floor.close()


def print_in_process(
    variants: Sequence[Variant],
    samples: dict[str, Samples],
    notes: dict[str, str],
    clock: str,
    rounds: int,
    n: int,
) -> None:
    other = "wall" if clock == "cpu" else "cpu"
    main, second = samples[clock], samples[other]
    print(
        f"\n== Part 1: in-process, GET {PATH} ({ROUTE}) through asgi_request; "
        f"{rounds} rounds x {n} requests per variant, shuffled order each round"
    )
    print(
        f"   µs/req on the {CLOCKS[clock]} (median over rounds, IQR); added = median over "
        "rounds of (variant - bare) in the same round;\n"
        f"   the last two columns are the same on the {CLOCKS[other]}\n"
    )
    official = main.added(OTEL_DEFAULT.key) if OTEL_DEFAULT in variants else None
    floor = main.median("floor")
    header = (
        f"{'variant':44} {'µs/req':>7} {'IQR':>13} {'added':>7} {'x bare':>6} "
        f"{'/official':>9} {'/floor':>6} | {other + ' µs':>8} {'added':>7}"
    )
    print(header)
    print("-" * len(header))
    for v in variants:
        median = main.median(v.key)
        lo, hi = main.iqr(v.key)
        added = main.added(v.key) if v is not BARE else 0.0
        ratio_bare = median / main.median(BARE.key)
        vs_official = f"{added / official:.2f}x" if official and v is not BARE else "-"
        vs_floor = f"{added / floor:.2f}x" if v is not BARE else "-"
        added_other = second.added(v.key) if v is not BARE else 0.0
        print(
            f"{v.label:44} {median:7.1f} {lo:6.1f}-{hi:<6.1f} {added:7.1f} {ratio_bare:5.2f}x "
            f"{vs_official:>9} {vs_floor:>6} | {second.median(v.key):8.1f} {added_other:7.1f}"
        )
    lo, hi = main.iqr("floor")
    print(f"{Floor.label:44} {floor:7.1f} {lo:6.1f}-{hi:<6.1f} {'':7} {'':6} {'':9} {'':6} | "
          f"{second.median('floor'):8.1f}")  # fmt: skip
    print("\nTelemetry recorded (spans exported / expected, requests in the duration histogram):")
    for v in variants:
        print(f"  {v.label:44} {notes[v.key]}")
    print(f"  {Floor.label:44} {notes['floor']}")


def goal_line(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


def print_in_process_goals(
    variants: Sequence[Variant], samples: dict[str, Samples], clock: str
) -> None:
    other = "wall" if clock == "cpu" else "cpu"
    main, second = samples[clock], samples[other]
    print(f"\nGoals (in-process, {CLOCKS[clock]}; the {other} clock's ratio in brackets):")
    floor = main.median("floor")
    if OTELPERF in variants:
        added = main.added(OTELPERF.key)
        added_other = second.added(OTELPERF.key)
        if OTEL_DEFAULT in variants:
            official = main.added(OTEL_DEFAULT.key)
            ratio = added / official
            ratio_other = added_other / second.added(OTEL_DEFAULT.key)
            print(
                goal_line(
                    ratio <= 0.25,
                    f"otelperf traces+metrics adds {added:.1f} µs = {ratio:.2f}x the official "
                    f"middleware's {official:.1f} µs (goal <= 0.25x) [{ratio_other:.2f}x]",
                )
            )
        else:
            print("SKIP  otelperf vs official middleware: official middleware not installed")
        ratio_other = added_other / second.median("floor")
        print(
            goal_line(
                added <= 2 * floor,
                f"otelperf traces+metrics adds {added:.1f} µs = {added / floor:.2f}x the floor "
                f"of {floor:.1f} µs (goal <= 2x) [{ratio_other:.2f}x]",
            )
        )
    present = [p for p in PROMETHEUS if p in variants]
    if OTELPERF_SAMPLED_OUT in variants and present:
        added = main.added(OTELPERF_SAMPLED_OUT.key)
        cheapest = min(present, key=lambda p: main.added(p.key))
        bound = main.added(cheapest.key)
        ratio_other = second.added(OTELPERF_SAMPLED_OUT.key) / min(
            second.added(p.key) for p in present
        )
        print(
            goal_line(
                added <= bound,
                f"otelperf traces sampled out adds {added:.1f} µs vs the cheaper Prometheus "
                f"middleware ({cheapest.label}) {bound:.1f} µs = {added / bound:.2f}x "
                f"(goal <= 1x) [{ratio_other:.2f}x]",
            )
        )
    elif OTELPERF_SAMPLED_OUT in variants:
        print("SKIP  otelperf sampled out vs Prometheus: no Prometheus middleware installed")


# --- part 2: served by uvicorn, loaded by wrk -----------------------------------------

_SERVED: Built | None = None


def served_app() -> ASGIApp:
    """uvicorn ``--factory`` entry: the variant named by $OTELPERF_BENCH_VARIANT."""
    global _SERVED
    key = os.environ.get(VARIANT_ENV, "bare")
    variant = BY_KEY.get(key)
    if variant is None:
        raise SystemExit(f"{VARIANT_ENV}={key!r} is not a variant; one of {', '.join(BY_KEY)}")
    _SERVED = variant.build(True)
    return _SERVED.app


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with _NO_PROXY.open(url, timeout=timeout) as response:
        return int(response.status), bytes(response.read())


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    errors: str | None


def parse_wrk(output: str) -> WrkResult:
    total = re.search(r"(\d+) requests in ", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if total is None or rps is None:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    errors = []
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors.append(f"{non_2xx.group(1)} non-2xx responses")
    sockets = re.search(r"Socket errors: (.*)", output)
    if sockets:
        errors.append(f"socket errors: {sockets.group(1)}")
    return WrkResult(int(total.group(1)), float(rps.group(1)), "; ".join(errors) or None)


@dataclass(frozen=True)
class WrkSetup:
    threads: int
    connections: int
    duration: float
    warmup: float
    cpus: tuple[int, int] | None  # (server's, wrk's), or None: not pinned

    def command(self, url: str, duration: float) -> list[str]:
        cmd = ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{duration:g}s", url]
        return pinned(cmd, self.cpus[1] if self.cpus else None)


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def pick_cpus() -> tuple[int, int] | None:
    """One CPU for the server, another for wrk, so neither takes turns with the other."""
    if shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def run_wrk(setup: WrkSetup, url: str, duration: float) -> WrkResult:
    done = subprocess.run(
        setup.command(url, duration),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


@dataclass(frozen=True)
class ServedRun:
    """One variant served and loaded once."""

    rps: float
    cpu_us: float | None  # server CPU (all its threads) per request, when /proc tells
    problem: str | None
    note: str


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of process ``pid``, all threads, from /proc (Linux); else None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields 14 and 15 of the line are utime and stime; fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_and_load(variant: Variant, setup: WrkSetup) -> ServedRun:
    """Start the variant under uvicorn, warm it up, load it, check its telemetry, stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "uvicorn", "http_overhead:served_app", "--factory",
        "--app-dir", HERE, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    cmd = pinned(cmd, setup.cpus[0] if setup.cpus else None)  # taskset execs: same pid
    env = {**os.environ, VARIANT_ENV: variant.key}
    with tempfile.TemporaryFile(mode="w+") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            answered = wait_until_serving(server, base + PATH, log)
            warm = run_wrk(setup, base + PATH, setup.warmup) if setup.warmup > 0 else None
            cpu_before = process_cpu_seconds(server.pid)
            result = run_wrk(setup, base + PATH, setup.duration)
            cpu_after = process_cpu_seconds(server.pid)
            cpu_us = None
            if cpu_before is not None and cpu_after is not None and result.requests:
                cpu_us = (cpu_after - cpu_before) / result.requests * 1e6
            status, body = http_get(base + TELEMETRY_PATH, timeout=30)
            if status != 200:
                raise RuntimeError(f"{TELEMETRY_PATH} answered {status}: {body!r}")
            raw = json.loads(body)
            counts = Counts(raw["spans"], raw["requests"])
            served = answered + (warm.requests if warm else 0) + result.requests
            # wrk stops with up to one request in flight per connection, per run.
            slack = 2 * setup.connections + 1
            problem = check_counts(variant, counts, served, slack)
            if result.errors:
                problem = "; ".join(p for p in (problem, f"wrk: {result.errors}") if p)
            return ServedRun(result.rps, cpu_us, problem, describe_served(variant, counts, served))
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            if server.returncode not in (0, -15):
                log.seek(0)
                print(f"   uvicorn ({variant.key}) exited {server.returncode}:\n{log.read()}")


def describe_served(variant: Variant, counts: Counts, served: int) -> str:
    parts = []
    if variant.spans_per_request == 0:
        parts.append(f"spans {counts.spans} (none expected)")
    elif variant.spans_per_request is not None:
        expected = variant.spans_per_request * served
        parts.append(f"spans {counts.spans} (>= {expected} expected)")
        if counts.spans is not None and counts.spans < expected:
            parts[-1] += f", {expected - counts.spans} dropped by the batch processor"
    if counts.requests is not None:
        parts.append(f"requests {counts.requests} (wrk+probes: {served})")
    return ", ".join(parts) or "nothing to record"


def wait_until_serving(server: subprocess.Popen[Any], url: str, log: Any) -> int:
    """Wait until the server answers 200; returns how many requests that took (1)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"uvicorn exited {server.returncode} at startup:\n{log.read()}")
        try:
            status, _ = http_get(url, timeout=1)
        except (OSError, urllib.error.URLError):
            time.sleep(0.05)
            continue
        if status != 200:
            raise RuntimeError(f"{url} answered {status}")
        return 1
    raise RuntimeError(f"uvicorn did not answer {url} within 30 s")


def server_stack() -> str:
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn {version('uvicorn')} ({parser}, {loop})"


def run_served(variants: Sequence[Variant], rounds: int, setup: WrkSetup) -> bool:
    cpus = setup.cpus
    where = f"server on CPU {cpus[0]}, wrk on CPU {cpus[1]}" if cpus else "not pinned to CPUs"
    print(
        f"\n== Part 2: served by {server_stack()}, 1 worker, on 127.0.0.1; "
        f"wrk -t{setup.threads} -c{setup.connections} -d{setup.duration:g}s "
        f"(after a {setup.warmup:g}s warm-up), {rounds} rounds in shuffled order; {where}"
    )
    print(
        "   x bare = median over rounds of (variant RPS / bare RPS in the same round);\n"
        "   CPU µs/req = the server process's CPU (all threads) per request under wrk, and\n"
        "   capacity = bare's CPU/req / the variant's: the RPS ratio of a server with a\n"
        "   core to itself, steadier than RPS when the machine is shared\n"
    )
    runs: list[dict[str, ServedRun]] = []  # per round, by variant key
    notes: dict[str, str] = {}
    ok = True
    order = list(variants)
    for r in range(rounds):
        random.shuffle(order)
        runs.append({})
        for v in order:
            try:
                run = serve_and_load(v, setup)
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
                ok = False
                notes[v.key] = f"RUN FAILED (round {r + 1}): {exc}"
                print(f"   {v.label}: round {r + 1} failed: {exc}")
                continue
            runs[-1][v.key] = run
            if run.problem:
                ok = False
                notes[v.key] = f"TELEMETRY CHECK FAILED (round {r + 1}): {run.problem}"
            elif "FAILED" not in notes.get(v.key, ""):
                notes[v.key] = run.note

    def ratio(key: str, cpu: bool = False) -> float:
        values = []
        for by_key in runs:
            run, bare = by_key.get(key), by_key.get(BARE.key)
            if run is None or bare is None:
                continue
            if not cpu:
                values.append(run.rps / bare.rps)
            elif run.cpu_us and bare.cpu_us:
                values.append(bare.cpu_us / run.cpu_us)
        return statistics.median(values) if values else float("nan")

    def median(key: str, cpu: bool = False) -> str:
        values = [(run.cpu_us if cpu else run.rps) for by_key in runs if (run := by_key.get(key))]
        present = [x for x in values if x is not None]
        return f"{statistics.median(present):.0f}" if present else "-"

    header = (
        f"{'variant':44} {'RPS':>6}  {'per round':20} {'x bare':>6} | "
        f"{'CPU µs/req':>10} {'capacity':>8}"
    )
    print(header)
    print("-" * len(header))
    for v in variants:
        per_round = " ".join(f"{by_key[v.key].rps:.0f}" for by_key in runs if v.key in by_key)
        print(
            f"{v.label:44} {median(v.key):>6}  {per_round:20} {ratio(v.key):5.2f}x | "
            f"{median(v.key, cpu=True):>10} {ratio(v.key, cpu=True):7.2f}x"
        )
    print("\nTelemetry recorded by the server (last round; spans exported, duration points):")
    for v in variants:
        print(f"  {v.label:44} {notes.get(v.key, '-')}")
    print("\nGoals (served, RPS ratios; the CPU capacity ratio in brackets):")
    if OTELPERF in variants:
        kept = ratio(OTELPERF.key)
        print(
            goal_line(
                kept >= 0.4,
                f"otelperf traces+metrics keeps {kept:.2f}x of bare RPS (goal >= 0.4x) "
                f"[{ratio(OTELPERF.key, cpu=True):.2f}x]",
            )
        )
    present = [p for p in PROMETHEUS if p in variants]
    if OTELPERF_SAMPLED_OUT in variants and present:
        kept = ratio(OTELPERF_SAMPLED_OUT.key)
        best = max(present, key=lambda p: ratio(p.key))
        bound = ratio(best.key)
        kept_cpu = ratio(OTELPERF_SAMPLED_OUT.key, cpu=True)
        bound_cpu = max(ratio(p.key, cpu=True) for p in present)
        print(
            goal_line(
                kept >= bound,
                f"otelperf traces sampled out keeps {kept:.2f}x of bare RPS vs the best "
                f"Prometheus middleware ({best.label}) {bound:.2f}x (goal >=) "
                f"[{kept_cpu:.2f}x vs {bound_cpu:.2f}x]",
            )
        )
    elif OTELPERF_SAMPLED_OUT in variants:
        print("SKIP  otelperf sampled out vs Prometheus: no Prometheus middleware installed")
    return ok


# --- profiling ------------------------------------------------------------------------


async def profile_variant(variant: Variant, requests: int, top: int) -> None:
    built = variant.build(False)
    built.start()
    try:
        await timed_requests(built.app, 500)
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        await timed_requests(built.app, requests)
        profiler.disable()
    finally:
        built.close()
    print(f"\n== cProfile of {requests} requests through {variant.label}\n")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


# --- main -----------------------------------------------------------------------------


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def print_environment() -> None:
    dists = [
        "otelperf",
        "opentelemetry-sdk",
        "opentelemetry-instrumentation-asgi",
        "prometheus-fastapi-instrumentator",
        "starlette-exporter",
        "prometheus-client",
        "starlette",
    ]
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print("  " + ", ".join(f"{d} {version(d)}" for d in dists))
    opt_in = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN")
    if opt_in:
        print(f"  OTEL_SEMCONV_STABILITY_OPT_IN={opt_in}: otel-asgi emits the metrics it selects")
    else:
        print(
            "  otel-asgi measured at its default: old semconv metrics (http.server.duration, "
            "ms); set OTEL_SEMCONV_STABILITY_OPT_IN=http for the stable ones otelperf emits"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--no-wrk", action="store_true", help="skip the served (wrk) part")
    parser.add_argument("--rounds", type=int, help="in-process rounds (default 15, quick 5)")
    parser.add_argument("--requests", type=int, help="requests per variant per round (2000)")
    parser.add_argument("--wrk-rounds", type=int, help="served rounds (default 3, quick 1)")
    parser.add_argument("--wrk-duration", type=float, help="seconds per wrk run (5, quick 2)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and wrk to CPUs")
    parser.add_argument(
        "--only",
        help="comma-separated variant keys (bare is always included): " + ", ".join(BY_KEY),
    )
    parser.add_argument("--profile", metavar="VARIANT", help="cProfile one variant and exit")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="clock the in-process goals are judged on (default cpu: robust on a busy machine)",
    )
    parser.add_argument("--seed", type=int, help="seed for the shuffled orders")
    args = parser.parse_args(argv)
    if args.seed is not None:
        random.seed(args.seed)

    if args.profile:
        variant = BY_KEY.get(args.profile)
        if variant is None:
            parser.error(f"--profile: unknown variant {args.profile!r}; one of {', '.join(BY_KEY)}")
        asyncio.run(profile_variant(variant, 20000 if not args.quick else 5000, 30))
        return 0

    rounds = args.rounds or (5 if args.quick else 15)
    requests = args.requests or (500 if args.quick else 2000)
    warmup = min(requests, 500)
    wrk_rounds = args.wrk_rounds or (1 if args.quick else 3)
    duration = args.wrk_duration or (2.0 if args.quick else 5.0)

    wanted = list(VARIANTS)
    if args.only:
        keys = {k.strip() for k in args.only.split(",")}
        unknown = keys - BY_KEY.keys()
        if unknown:
            parser.error(
                f"--only: unknown {', '.join(sorted(unknown))}; one of {', '.join(BY_KEY)}"
            )
        wanted = [v for v in VARIANTS if v is BARE or v.key in keys]
    print_environment()
    variants = []
    for v in wanted:
        why = v.missing()
        if why:
            print(f"SKIP  {v.label}: {why}")
        else:
            variants.append(v)

    samples, notes, ok = asyncio.run(run_in_process(variants, rounds, requests, warmup))
    print_in_process(variants, samples, notes, args.clock, rounds, requests)
    print_in_process_goals(variants, samples, args.clock)

    if args.no_wrk:
        print("\n(served part skipped: --no-wrk)")
    elif shutil.which("wrk") is None:
        print("\nSKIP  served part: wrk is not installed (apt-get install -y wrk)")
    else:
        cpus = None if args.no_pin else pick_cpus()
        setup = WrkSetup(2, 32, duration, 1.0 if args.quick else 2.0, cpus)
        ok = run_served(variants, wrk_rounds, setup) and ok
    if not ok:
        print(
            "\nA variant failed to run or to record its telemetry (see above): "
            "its figures are not comparable"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
