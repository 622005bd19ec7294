"""The main job: run the example shop with the embedded default config, drive requests through
it, and print a summary of the telemetry that was recorded.

    python examples/demo.py [--requests 300] [--config configs/demo.yaml]

Needs no Redis, PostgreSQL or collector: telemetry is written as OTLP JSON lines to a
local file (``telemetry.file.path``), which the summary is computed from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from opentelemetry import propagate, trace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import otelperf  # noqa: E402
from examples.shop_app import create_app  # noqa: E402
from otelperf.testing import asgi_lifespan, asgi_request  # noqa: E402

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

_SERVER = 2  # SPAN_KIND_SERVER in OTLP

# (method, path template used for reporting, concrete path generator, weight)
_TRAFFIC: list[tuple[str, str, Callable[[], str], int]] = [
    ("GET", "/api/products", lambda: "/api/products", 30),
    ("GET", "/api/products/{product_id}", lambda: f"/api/products/{random.randint(1, 60)}", 45),
    ("POST", "/api/checkout", lambda: "/api/checkout", 10),
    ("GET", "/reports/daily", lambda: "/reports/daily", 5),
    ("GET", "/fail", lambda: "/fail", 3),
    ("GET", "/healthz", lambda: "/healthz", 7),
]


async def drive(perf: otelperf.Perf, app: ASGIApp, requests: int, concurrency: int) -> None:
    """Send ``requests`` requests, ``concurrency`` at a time, each under a client span."""
    tracer = perf.tracer
    duration = perf.meter.create_histogram(
        "http.client.request.duration", unit="s", description="Duration of HTTP client requests."
    )
    weights = [w for *_, w in _TRAFFIC]
    plan = [random.choices(_TRAFFIC, weights)[0] for _ in range(requests)]
    plan_iter = iter(plan)

    async def one(method: str, template: str, path: str) -> None:
        with tracer.start_as_current_span(f"{method} {template}", kind=trace.SpanKind.CLIENT):
            headers: dict[str, str] = {}
            propagate.inject(headers)  # the server span continues this trace
            started = time.perf_counter()
            try:
                status = (await asgi_request(app, method, path, headers=headers)).status
            except Exception:
                status = 500  # what a server answers when the app raises
            duration.record(
                time.perf_counter() - started,
                {"http.request.method": method, "http.response.status_code": status},
            )

    async def worker() -> None:
        for method, template, make_path, _w in plan_iter:
            await one(method, template, make_path())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def summarize(path: Path) -> dict[str, Any]:
    """Read the OTLP JSON lines back: server spans per route, and the last metric points."""
    durations: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    metrics: dict[str, list[dict[str, Any]]] = {}
    resource: dict[str, Any] = {}
    lines = 0
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            lines += 1
            record = json.loads(line)
            for rs in record.get("resourceSpans", []):
                resource = {
                    a["key"]: next(iter(a["value"].values())) for a in rs["resource"]["attributes"]
                }
                for ss in rs.get("scopeSpans", []):
                    for span in ss.get("spans", []):
                        if span.get("kind") != _SERVER:
                            continue
                        ms = (int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e6
                        durations[span["name"]].append(ms)
                        if any(a["key"] == "error.type" for a in span.get("attributes", [])):
                            errors[span["name"]] += 1
            for rm in record.get("resourceMetrics", []):
                for sm in rm.get("scopeMetrics", []):
                    for metric in sm.get("metrics", []):
                        data = next(iter(v for k, v in metric.items() if isinstance(v, dict)), {})
                        metrics[metric["name"]] = data.get(
                            "dataPoints", []
                        )  # cumulative: last wins
    return {
        "lines": lines,
        "resource": resource,
        "durations": durations,
        "errors": errors,
        "metrics": metrics,
    }


def _pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(summary: dict[str, Any], path: Path, elapsed: float, requests: int) -> None:
    resource = summary["resource"]
    print(
        f"otelperf demo: {requests} requests in {elapsed:.2f}s through perf.wrap(create_app(perf))"
    )
    print(
        f"service: {resource.get('service.name')} {resource.get('service.version', '')} "
        f"({resource.get('deployment.environment.name', '-')}), pid {resource.get('process.pid')}"
    )
    print()
    print(
        f"{'server span (route)':36} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'errors':>7}"
    )
    for name, values in sorted(summary["durations"].items(), key=lambda kv: -len(kv[1])):
        errs = summary["errors"].get(name, 0)
        print(
            f"{name:36} {len(values):6d} {_pct(values, 50):8.2f} {_pct(values, 95):8.2f} "
            f"{_pct(values, 99):8.2f} {errs / len(values):6.1%}"
        )
    print()
    metrics = summary["metrics"]
    lag = metrics.get("otelperf.asyncio.eventloop.delay", [])
    count = sum(int(p.get("count", 0)) for p in lag)
    if count:
        total = sum(float(p.get("sum", 0.0)) for p in lag)
        worst = max(float(p.get("max", 0.0)) for p in lag)
        print(
            f"event-loop lag: {count} samples, mean {total / count * 1000:.2f} ms, "
            f"max {worst * 1000:.2f} ms"
        )
    slo = metrics.get("otelperf.http.slo.requests", [])
    for kind in ("latency", "availability"):
        good = bad = 0
        for point in slo:
            attrs = {a["key"]: next(iter(a["value"].values())) for a in point["attributes"]}
            if attrs.get("otelperf.slo") == kind and "http.route" not in attrs:
                value = int(point.get("asInt", 0))
                good += value if attrs["otelperf.slo.result"] == "good" else 0
                bad += value if attrs["otelperf.slo.result"] == "bad" else 0
        if good + bad:
            print(f"SLO {kind}: {good / (good + bad):.2%} good of {good + bad} requests")
    print(f"metrics exported: {len(metrics)} ({', '.join(sorted(metrics)[:6])}, ...)")
    print(f"full telemetry ({summary['lines']} OTLP JSON lines): {path.resolve()}")


def resources(perf: otelperf.Perf) -> None:
    """What the declared cache and batcher did during the run."""
    for name, cache in perf.resources.caches.items():
        stats = cache.stats()
        lookups = stats["hits"] + stats["misses"]
        ratio = stats["hits"] / lookups if lookups else 0.0
        print(f"cache {name}: {stats['hits']} hits / {lookups} lookups ({ratio:.0%} hit ratio)")
    for name, batcher in perf.resources.batchers.items():
        counts = batcher.stats()
        sink = perf.config.batchers[name].sink.jsonl
        where = f" to {Path(sink.path).resolve()}" if sink is not None else ""
        print(
            f"batcher {name}: {counts.produced} events, {counts.written} written{where}, "
            f"{counts.dead_lettered} dead-lettered, {counts.dropped} dropped"
        )


async def run(perf: otelperf.Perf, requests: int, concurrency: int) -> float:
    """Serve the wrapped shop through its lifespan and drive it; return the elapsed seconds."""
    app = perf.wrap(create_app(perf))
    started = time.perf_counter()
    async with asgi_lifespan(app):
        await drive(perf, app, requests, concurrency)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", default=str(HERE.parent / "configs" / "demo.yaml"))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        perf = otelperf.load(args.config)
    except otelperf.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if perf.config.telemetry.exporter != "file":
        print("the demo summarizes a file exporter's output; use telemetry.exporter: file")
        return 2
    path = Path(perf.config.telemetry.file.path)
    path.unlink(missing_ok=True)  # the summary covers this run only
    random.seed(args.seed)
    elapsed = asyncio.run(run(perf, args.requests, args.concurrency))
    report(summarize(path), path, elapsed, args.requests)
    resources(perf)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
