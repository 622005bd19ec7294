"""otelperf under real servers: uvicorn, uvicorn --workers 2 and gunicorn, exporting to a
real OTLP receiver over gRPC."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.otlp_receiver import OtlpReceiver, free_port

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, receiver: OtlpReceiver) -> Path:
    path = tmp_path / "otelperf.yaml"
    path.write_text(
        f"""
version: 1
service: {{name: served-shop, version: "2.0"}}
telemetry:
  exporter: otlp
  otlp: {{endpoint: "{receiver.grpc_endpoint}", protocol: grpc, timeout: 2s}}
  traces: {{schedule_delay: 100ms}}
  metrics: {{interval: 300ms}}
  shutdown_timeout: 3s
runtime: {{process: true, event_loop_lag: true}}
""",
        encoding="utf-8",
    )
    return path


@contextmanager
def serve(command: list[str], config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group on 127.0.0.1; stop it by its pid afterwards."""
    env = {**os.environ, "OTELPERF_TEST_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"server exited early:\n{output}")
        else:
            pytest.fail("server did not answer /healthz within 30 s")
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # a clean shutdown: lifespans flush
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout:
            process.stdout.close()


def _drive(port: int, count: int) -> list[int]:
    statuses = []
    for i in range(count):
        path = ["/api/products", f"/api/products/{i % 50 + 1}", "/fail", "/reports/daily"][i % 4]
        # A new connection each time, so a multi-worker server spreads the requests.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            statuses.append(client.get(path).status_code)
    return statuses


def _worker_pids(receiver: OtlpReceiver, signal_name: str) -> set[int]:
    return {
        int(attrs["process.pid"])
        for attrs in receiver.resource_attributes(signal_name)
        if "process.pid" in attrs
    }


def test_uvicorn_end_to_end_over_grpc(tmp_path: Path, otlp_receiver: OtlpReceiver) -> None:
    """Served by uvicorn and called over HTTP, the app's spans and metrics reach the receiver."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.http.served_app:app", "--host",
               "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    with serve(command, _config(tmp_path, otlp_receiver), port) as server:
        statuses = _drive(port, 20)
        assert statuses.count(500) == 5
        assert otlp_receiver.wait_for(
            lambda: "GET /api/products/{product_id}" in otlp_receiver.span_names(), timeout=15
        )
        assert otlp_receiver.wait_for(
            lambda: (
                {"http.server.request.duration", "otelperf.asyncio.eventloop.delay"}
                <= otlp_receiver.metric_names()
            ),
            timeout=15,
        )
        server_pid = server.pid
    names = otlp_receiver.span_names()
    assert "GET /fail" in names
    assert "GET /healthz" not in names  # health is answered without a span
    assert "GET" not in names
    (resource,) = {tuple(sorted(a.items())) for a in otlp_receiver.resource_attributes("traces")}
    attrs = dict(resource)
    assert attrs["service.name"] == "served-shop"
    assert attrs["service.version"] == "2.0"
    assert attrs["process.pid"] == server_pid
    fails = [span for _, span in otlp_receiver.spans() if span.name == "GET /fail"]
    assert len(fails) == 5
    assert all(span.status.code == 2 for span in fails)  # STATUS_CODE_ERROR


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_two_workers_each_report(tmp_path: Path, otlp_receiver: OtlpReceiver, server: str) -> None:
    """With two worker processes, telemetry arrives from both pids (built after the fork)."""
    port = free_port()
    if server == "uvicorn":
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.http.served_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ]
    else:
        command = [sys.executable, "-m", "gunicorn", "tests.http.served_app:app", "--preload",
                   "-k", "uvicorn_worker.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{port}",
                   "--log-level", "warning"]  # fmt: skip
    with serve(command, _config(tmp_path, otlp_receiver), port) as process:
        _drive(port, 40)
        assert otlp_receiver.wait_for(
            lambda: len(_worker_pids(otlp_receiver, "metrics")) >= 2, timeout=20
        ), _worker_pids(otlp_receiver, "metrics")
        master = process.pid
    pids = _worker_pids(otlp_receiver, "metrics")
    assert len(pids) == 2
    assert master not in pids  # providers were built in the workers, not inherited
    instance_ids = {
        attrs["service.instance.id"] for attrs in otlp_receiver.resource_attributes("metrics")
    }
    assert len(instance_ids) == 2
