"""The README's run command works on embedded defaults, with no services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import otelperf

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_and_summarizes_recorded_telemetry(tmp_path: Path) -> None:
    """examples/demo.py drives requests, writes OTLP JSON lines and prints per-route figures."""
    out_file = tmp_path / "telemetry.jsonl"
    events_file = tmp_path / "events.jsonl"
    env = {
        **os.environ,
        "OTELPERF_TELEMETRY_FILE": str(out_file),
        "OTELPERF_EVENTS_FILE": str(events_file),
    }
    env.pop("OTEL_SDK_DISABLED", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--requests", "120"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "120 requests" in result.stdout
    assert "GET /api/products/{product_id}" in result.stdout
    assert "event-loop lag:" in result.stdout
    assert "SLO availability:" in result.stdout
    assert "cache products:" in result.stdout
    checkouts = sum(
        1 for line in result.stdout.splitlines() if line.startswith("POST /api/checkout")
    )
    assert checkouts == 1
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert events
    assert all(e["kind"] == "checkout" for e in events)
    assert f"batcher events: {len(events)} events, {len(events)} written" in result.stdout
    assert str(out_file) in result.stdout
    client: dict[str, str] = {}
    server: list[dict[str, object]] = []
    for line in out_file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for rs in record.get("resourceSpans", []):
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    if span["kind"] == 3:  # CLIENT: the driver's side
                        client[span["spanId"]] = span["traceId"]
                    elif span["kind"] == 2:  # SERVER: the middleware's side
                        server.append(span)
    assert len(client) == 120
    assert 0 < len(server) < 120  # health checks are answered without a span
    for span in server:  # every server span continues the driver's trace
        assert client[str(span["parentSpanId"])] == span["traceId"]


def test_shipped_configs_all_load() -> None:
    """Every config in configs/ passes validation with an empty environment."""
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        config = otelperf.load_config(path, environ={})
        assert config.service.name
