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
from examples.shop_app import app as shop_app  # noqa: E402

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

# (method, path template used for reporting, concrete path generator, weight)
_TRAFFIC: list[tuple[str, str, Callable[[], str], int]] = [
    ("GET", "/api/products", lambda: "/api/products", 30),
    ("GET", "/api/products/{product_id}", lambda: f"/api/products/{random.randint(1, 60)}", 45),
    ("POST", "/api/checkout", lambda: "/api/checkout", 10),
    ("GET", "/reports/daily", lambda: "/reports/daily", 5),
    ("GET", "/fail", lambda: "/fail", 3),
    ("GET", "/healthz", lambda: "/healthz", 7),
]


async def call(app: ASGIApp, method: str, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """One HTTP request through the ASGI app in-process; returns (status, body bytes)."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent = False
    status, size = 500, 0

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the response is produced
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    try:
        await app(scope, receive, send)
    except Exception:
        status = 500  # what a server answers when the app raises
    return status, size


async def drive(perf: otelperf.Perf, app: ASGIApp, requests: int) -> None:
    """Send ``requests`` requests, each under a client span whose context is propagated."""
    tracer = perf.tracer
    duration = perf.meter.create_histogram(
        "http.client.request.duration", unit="s", description="Duration of HTTP client requests."
    )
    weights = [w for *_, w in _TRAFFIC]
    for _ in range(requests):
        method, template, make_path, _w = random.choices(_TRAFFIC, weights)[0]
        with tracer.start_as_current_span(
            f"{method} {template}", kind=trace.SpanKind.CLIENT
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            started = time.perf_counter()
            status, _size = await call(app, method, make_path(), headers)
            duration.record(
                time.perf_counter() - started,
                {
                    "http.request.method": method,
                    "url.template": template,
                    "http.response.status_code": status,
                },
            )
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.template", template)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(trace.StatusCode.ERROR)


def summarize(path: Path) -> dict[str, Any]:
    """Read the OTLP JSON lines back and compute per-route latency and error figures."""
    durations: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    metric_names: set[str] = set()
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
                        ms = (int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e6
                        durations[span["name"]].append(ms)
                        attrs = {a["key"]: a["value"] for a in span.get("attributes", [])}
                        if "error.type" in attrs:
                            errors[span["name"]] += 1
            for rm in record.get("resourceMetrics", []):
                for sm in rm.get("scopeMetrics", []):
                    metric_names.update(m["name"] for m in sm.get("metrics", []))
    return {
        "lines": lines,
        "resource": resource,
        "durations": durations,
        "errors": errors,
        "metrics": sorted(metric_names),
    }


def _pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(summary: dict[str, Any], path: Path, elapsed: float, requests: int) -> None:
    resource = summary["resource"]
    print(f"otelperf demo: {requests} requests in {elapsed:.2f}s against the example shop")
    print(
        f"service: {resource.get('service.name')} {resource.get('service.version', '')} "
        f"({resource.get('deployment.environment.name', '-')})"
    )
    print()
    print(f"{'span':36} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, values in sorted(summary["durations"].items(), key=lambda kv: -len(kv[1])):
        errs = summary["errors"].get(name, 0)
        print(
            f"{name:36} {len(values):6d} {_pct(values, 50):8.2f} {_pct(values, 95):8.2f} "
            f"{_pct(values, 99):8.2f} {errs / len(values):6.1%}"
        )
    print()
    metrics = summary["metrics"]
    print(f"metrics exported: {', '.join(metrics) if metrics else 'none yet'}")
    print(f"full telemetry ({summary['lines']} OTLP JSON lines): {path.resolve()}")


async def run(perf: otelperf.Perf, requests: int) -> float:
    """Drive the shop with telemetry started; return the elapsed seconds."""
    started = time.perf_counter()
    async with perf:
        await drive(perf, shop_app, requests)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", default=str(HERE.parent / "configs" / "demo.yaml"))
    parser.add_argument("--requests", type=int, default=300)
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
    elapsed = asyncio.run(run(perf, args.requests))
    report(summarize(path), path, elapsed, args.requests)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
