"""Profiling hooks: what a request pays when no hook selects it, and what each engine costs.

One Starlette app is driven straight through the ASGI interface
(``otelperf.testing.asgi_request``), behind the wiring the HTTP middleware uses (a
server span from an SDK tracer, ``Profiling.begin`` before the app, ``Profiling.end``
after). Two routes: ``GET /items/42`` builds a small JSON document (a typical cheap
request, ~1-2 thousand Python calls), ``GET /reports/7`` does ~30x that work. Variants
differ only in the ``profiling:`` config:

- ``no hooks`` (twice, as A and A': their ratio is this run's noise);
- ``hooks, none selecting``: three route hooks at 100% and on-demand profiling, none of
  which selects ``/items/42`` (a prefix check, one regex, a scan of the headers);
- ``pyinstrument 100%`` / ``cprofile 100%``: every request profiled, ``min_duration:
  10s`` so nothing is written: the engine's own cost (start, sampling or tracing every
  call, stop, the top frames), on both routes, so the fixed and the per-call parts show;
- with ``--kept``, also ``pyinstrument 100%, kept``: every profile rendered and written
  (speedscope + HTML) by the background writer, whose CPU is counted (rotated at 5).

Each round runs every variant the same number of times, in shuffled order and in ten
interleaved chunks, in one process, so drift on a busy machine hits them all alike.
Reported: the median over rounds of µs/request on the process CPU clock (all threads;
wall clock beside it), and of each variant's ratio to its ``no hooks`` in the same
round. Quote the ratios. A direct timing of ``Profiling.begin`` on an unselected
request closes the report. Every variant must have profiled exactly as configured
(counted on ``otelperf.profile.captured``), or the run exits 1.

    python benchmarks/profiling.py            # 15 rounds x 1000 requests
    python benchmarks/profiling.py --quick    # 5 rounds x 300 requests
    python benchmarks/profiling.py --kept     # also profile and write every request
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib.metadata
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Tracer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from otelperf._component import ComponentTelemetry
from otelperf.config import load_config
from otelperf.profiling import Profiling
from otelperf.testing import asgi_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH = "/items/42"
HEAVY_PATH = "/reports/7"
HEAVY_SHARE = 10  # heavy requests are sent this many times less often
CHUNKS = 10
TOKEN = "benchmark-token-0123456789abcdef"
NOT_SELECTING: list[dict[str, Any]] = [
    {"route": "/reports/*"},
    {"route": "/admin/*", "engine": "cprofile"},
    {"route": "/exports/{export_id}/download", "sample_rate": "5%"},
]
EVERY_REQUEST = {"hooks": [{"route": "*", "min_duration": "10s"}]}
EVERY_REQUEST_CPROFILE = {"hooks": [{"route": "*", "min_duration": "10s", "engine": "cprofile"}]}


# --- the app ------------------------------------------------------------------------------


def price(item_id: int, i: int) -> float:
    return round((item_id * 31 + i * 17) % 1000 / 7.0, 2)


def line_total(report_id: int, i: int) -> float:
    return price(report_id, i) * ((i % 5) + 1)


async def item(request: Request) -> JSONResponse:
    item_id = int(request.path_params["item_id"])
    variants = [
        {"sku": f"SKU-{item_id:04d}-{i}", "price": price(item_id, i), "stock": (i * 7) % 13}
        for i in range(40)
    ]
    return JSONResponse({"id": item_id, "name": f"widget {item_id}", "variants": variants})


async def report(request: Request) -> JSONResponse:
    report_id = int(request.path_params["report_id"])
    lines = [{"n": i, "total": line_total(report_id, i)} for i in range(1500)]
    total = sum(line["total"] for line in lines)
    return JSONResponse({"id": report_id, "sum": total, "lines": lines[:20]})


def make_app() -> Starlette:
    return Starlette(
        routes=[Route("/items/{item_id}", item), Route("/reports/{report_id}", report)]
    )


class Wired:
    """``app`` with profiling wired as ``OtelperfMiddleware._http`` wires it."""

    def __init__(self, app: ASGIApp, profiling: Profiling, tracer: Tracer) -> None:
        self.app = app
        self.profiling = profiling
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        profiling = self.profiling
        if profiling.serves(scope) and await profiling.handle_endpoint(scope, receive, send):
            return
        start = time.perf_counter()
        span = self.tracer.start_span("GET", kind=SpanKind.SERVER)
        token = context_api.attach(trace.set_span_in_context(span))
        session = profiling.begin(scope)
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = profiling.response_start(session, message)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if session is not None:
                route = getattr(scope.get("route"), "path", None)
                profiling.end(
                    session,
                    span=span,
                    route=route,
                    duration=time.perf_counter() - start,
                    status=status,
                )
            span.end()
            context_api.detach(token)


# --- variants -----------------------------------------------------------------------------


@dataclass
class Variant:
    key: str
    label: str
    profiling: dict[str, Any]
    expect: dict[str, int] = field(default_factory=dict)  # outcome -> count per request
    path: str = PATH
    base: str = "none"  # the variant its ratio is taken against
    app: Wired | None = None
    component: Profiling | None = None
    reader: InMemoryMetricReader | None = None
    sent: int = 0


def variants(kept: bool) -> list[Variant]:
    found = [
        Variant("none", "no hooks (A)", {}),
        Variant("none2", "no hooks (A', the noise)", {}),
        Variant(
            "unselected",
            "hooks, none selecting",
            {"hooks": NOT_SELECTING, "on_demand": {"token": TOKEN}},
        ),
        Variant("pyinstrument", "pyinstrument 100%", EVERY_REQUEST, {"too_fast": 1}),
        Variant("cprofile", "cprofile 100%", EVERY_REQUEST_CPROFILE, {"too_fast": 1}),
        Variant("heavy", "heavy: no hooks", {}, path=HEAVY_PATH, base="heavy"),
        Variant(
            "heavy-pyinstrument",
            "heavy: pyinstrument 100%",
            EVERY_REQUEST,
            {"too_fast": 1},
            path=HEAVY_PATH,
            base="heavy",
        ),
        Variant(
            "heavy-cprofile",
            "heavy: cprofile 100%",
            EVERY_REQUEST_CPROFILE,
            {"too_fast": 1},
            path=HEAVY_PATH,
            base="heavy",
        ),
    ]
    if kept:
        # Kept or skipped (the writer's queue is bounded): one or the other per request.
        kept_config = {"hooks": [{"route": "/items/*", "keep": 5}]}
        found.append(Variant("kept", "pyinstrument 100%, kept", kept_config, {"kept": 1}))
    return found


def build(variant: Variant, directory: str) -> None:
    config = load_config(
        {
            "version": 1,
            "service": {"name": "bench"},
            "profiling": {"output_dir": os.path.join(directory, variant.key), **variant.profiling},
        }
    )
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("bench")
    tracer = TracerProvider().get_tracer("bench")  # records spans, exports none
    component = Profiling(config.profiling)
    component.open(ComponentTelemetry(tracer, meter))
    variant.component, variant.reader = component, reader
    variant.app = Wired(make_app(), component, tracer)


def outcomes(variant: Variant) -> dict[str, int]:
    assert variant.reader is not None
    assert variant.component is not None
    variant.component.flush(120)
    counts: dict[str, int] = {}
    data = variant.reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "otelperf.profile.captured":
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        outcome = str(attributes.get("otelperf.profile.outcome"))
                        counts[outcome] = counts.get(outcome, 0) + int(getattr(point, "value", 0))
    return counts


def check(variant: Variant) -> str | None:
    """None when the variant profiled as configured: every request, or none."""
    counts = outcomes(variant)
    if not variant.expect:
        return f"expected no profiles, counted {counts}" if counts else None
    for outcome, per_request in variant.expect.items():
        got = counts.get(outcome, 0)
        if variant.key == "kept":
            got += counts.get("skipped", 0)
        if got != per_request * variant.sent:
            return f"expected {per_request * variant.sent} {outcome}, counted {counts}"
    return None


# --- measuring ----------------------------------------------------------------------------


@dataclass
class Sample:
    cpu_us: float
    wall_us: float


async def run_requests(app: Wired, path: str, n: int) -> None:
    for _ in range(n):
        response = await asgi_request(app, "GET", path)
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}")


def per_chunk(variant: Variant, requests: int) -> int:
    share = HEAVY_SHARE if variant.path == HEAVY_PATH else 1
    return max(requests // CHUNKS // share, 1)


async def measure(found: list[Variant], rounds: int, requests: int) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {v.key: [] for v in found}
    for v in found:  # warm-up: imports, caches, first profiles
        assert v.app is not None
        await run_requests(v.app, v.path, per_chunk(v, requests))
        v.sent += per_chunk(v, requests)
    for _ in range(rounds):
        cpu = dict.fromkeys(samples, 0.0)
        wall = dict.fromkeys(samples, 0.0)
        sent = dict.fromkeys(samples, 0)
        for _ in range(CHUNKS):
            order = random.sample(found, len(found))
            for v in order:
                app, component = v.app, v.component
                assert app is not None
                assert component is not None
                n = per_chunk(v, requests)
                gc.collect()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await run_requests(app, v.path, n)
                # Profiles still being written count against the variant that made them.
                component.flush(120)
                cpu[v.key] += time.process_time() - cpu0
                wall[v.key] += time.perf_counter() - wall0
                sent[v.key] += n
                v.sent += n
        for key in samples:
            samples[key].append(Sample(cpu[key] / sent[key] * 1e6, wall[key] / sent[key] * 1e6))
    return samples


def ratios(
    samples: dict[str, list[Sample]], key: str, base: str, wall: bool = False
) -> list[float]:
    pairs = zip(samples[key], samples[base], strict=True)
    return [(a.wall_us / b.wall_us) if wall else (a.cpu_us / b.cpu_us) for a, b in pairs]


def begin_cost(directory: str) -> tuple[float, float, float]:
    """ns per ``begin()`` on an unselected request: no hooks, route hooks, route + on-demand."""
    scope = {
        "type": "http",
        "path": PATH,
        "headers": [
            (b"host", b"api.example.com"),
            (b"user-agent", b"curl/8.5"),
            (b"accept", b"application/json"),
            (b"accept-encoding", b"gzip, br"),
            (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ],
    }
    results = []
    for profiling in (
        {},
        {"hooks": NOT_SELECTING},
        {"hooks": NOT_SELECTING, "on_demand": {"token": TOKEN}},
    ):
        variant = Variant("begin", "begin", profiling)
        build(variant, directory)
        assert variant.component is not None
        begin = variant.component.begin
        if begin(scope) is not None:
            raise RuntimeError("begin() selected a request it should not")
        timer = timeit.Timer(functools.partial(begin, scope))
        loops, _ = timer.autorange()
        results.append(min(timer.repeat(repeat=7, number=loops)) / loops * 1e9)
        variant.component.close()
    return results[0], results[1], results[2]


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="5 rounds x 300 requests")
    parser.add_argument("--rounds", type=int, help="rounds (default 15, quick 5)")
    parser.add_argument("--requests", type=int, help="requests per variant per round (1000)")
    parser.add_argument("--kept", action="store_true", help="also profile and write every request")
    parser.add_argument("--seed", type=int, help="seed for the shuffled orders")
    args = parser.parse_args(argv)
    if args.seed is not None:
        random.seed(args.seed)
    rounds = args.rounds or (5 if args.quick else 15)
    requests = args.requests or (300 if args.quick else 1000)

    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    dists = ("otelperf", "pyinstrument", "opentelemetry-sdk", "starlette")
    print("  " + ", ".join(f"{d} {version(d)}" for d in dists))
    print(
        f"  {rounds} rounds; per variant and round {requests} x GET {PATH} or "
        f"{requests // HEAVY_SHARE} x GET {HEAVY_PATH}, in {CHUNKS} shuffled chunks\n"
        "  µs/request on the process CPU clock (wall clock in brackets); ratios: median over "
        "rounds of the\n  variant / its no-hooks baseline (heavy: / heavy no hooks) in the same "
        "round\n"
    )
    ok = True
    with tempfile.TemporaryDirectory(prefix="otelperf-bench-") as directory:
        found = variants(args.kept)
        for v in found:
            build(v, directory)
        samples = asyncio.run(measure(found, rounds, requests))
        problems = {v.key: check(v) for v in found}
        for v in found:
            assert v.component is not None
            v.component.close()
        ns_none, ns_hooks, ns_demand = begin_cost(directory)

    header = f"{'variant':28} {'µs/req':>8} {'(wall)':>9} {'x no hooks':>11} {'(wall)':>9}"
    print(header)
    print("-" * len(header))
    for v in found:
        cpu = statistics.median(s.cpu_us for s in samples[v.key])
        wall = statistics.median(s.wall_us for s in samples[v.key])
        wall_ratio = f"({statistics.median(ratios(samples, v.key, v.base, wall=True)):.3f}x)"
        print(
            f"{v.label:28} {cpu:8.1f} {f'({wall:.1f})':>9} "
            f"{statistics.median(ratios(samples, v.key, v.base)):10.3f}x {wall_ratio:>9}"
        )
        if problems[v.key]:
            ok = False
            print(f"   TELEMETRY CHECK FAILED: {problems[v.key]}")

    cheap = statistics.median(s.cpu_us for s in samples["none"])
    print(
        f"\nbegin() on an unselected request: {ns_none:.0f} ns with no hooks, "
        f"{ns_hooks:.0f} ns with 3 route hooks, {ns_demand:.0f} ns adding on-demand "
        f"(header scan); one GET {PATH} costs {cheap:.0f} µs"
    )
    print("\nGoals:")
    noise = statistics.quantiles(ratios(samples, "none2", "none"), n=4)
    unselected = statistics.median(ratios(samples, "unselected", "none"))
    aa = statistics.median(ratios(samples, "none2", "none"))
    within = noise[0] * 0.98 <= unselected <= noise[2] * 1.02
    print(
        f"{'PASS' if within else 'FAIL'}  hooks that do not select the request: {unselected:.3f}x "
        f"no hooks; the A/A noise: median {aa:.3f}x, quartiles {noise[0]:.3f}x..{noise[2]:.3f}x "
        "(goal: within them, +-2%)"
    )
    for v in found:
        if v.expect:
            base = next(b for b in found if b.key == v.base)
            added = statistics.median(
                a.cpu_us - b.cpu_us for a, b in zip(samples[v.key], samples[v.base], strict=True)
            )
            print(
                f"INFO  {v.label}: {statistics.median(ratios(samples, v.key, v.base)):.2f}x the "
                f"CPU of {base.label}, +{added:.0f} µs/request"
            )
    if not ok:
        print("\nA variant did not profile as configured (see above): its figures mean nothing")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
