"""SIGTERM mid-run on an app served by uvicorn: what was produced is written or dead-lettered,
exactly once each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.batch.conftest import Tables, read_dead_letters
from tests.otlp_receiver import free_port

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 100_000


@contextmanager
def serve(env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """uvicorn serving the test app on 127.0.0.1; killed by its pid if still running after."""
    command = [
        sys.executable, "-m", "uvicorn", "tests.batch.sigterm_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"the app exited early:\n{output}")
            if time.monotonic() > deadline:
                pytest.fail("the app did not answer /healthz within 30 s")
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def _progress(port: int) -> dict[str, int]:
    response = httpx.get(f"http://127.0.0.1:{port}/progress", timeout=5)
    response.raise_for_status()
    data: dict[str, int] = response.json()
    return data


def _wait_progress(port: int, produced: int, timeout: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        progress = _progress(port)
        if progress["produced"] >= produced:
            return progress
        if time.monotonic() > deadline:
            pytest.fail(f"the producer reached only {progress} in {timeout} s")
        time.sleep(0.02)


def _terminate(process: subprocess.Popen[bytes], *, sent: bool = False) -> str:
    """SIGTERM (unless already ``sent``) and wait for the exit; the server's output."""
    if not sent:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the app did not exit within 90 s of SIGTERM")
    output = process.stdout.read().decode() if process.stdout else ""
    # uvicorn re-raises the signal once its shutdown (our lifespan's exit) has completed.
    assert process.returncode in (0, -signal.SIGTERM), output
    return output


def _check_exactly_once(
    tables: Tables, table: str, dead: Path, summary_path: Path
) -> tuple[dict[str, Any], list[int], list[int]]:
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    produced = summary["produced"]
    written = [row[0] for row in tables.rows(table)]  # a primary key: no duplicate rows
    letters = read_dead_letters(dead)
    lettered = [record["item"][0] for record in letters]
    assert len(lettered) == len(set(lettered)), "an item was dead-lettered twice"
    assert not set(written) & set(lettered), "an item was both written and dead-lettered"
    assert sorted(written + lettered) == list(range(produced))
    stats = summary["stats"]
    assert stats["written"] == len(written)
    assert stats["dead_lettered"] == len(lettered)
    assert stats["dropped"] == 0
    assert stats["queued"] == stats["in_flight"] == 0
    assert stats["produced"] == produced
    return summary, written, lettered


def _env(postgres_dsn: str, table: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "OTELPERF_TEST_POSTGRES_DSN": postgres_dsn,
        "OTELPERF_TEST_TABLE": table,
        "OTELPERF_TEST_DLQ": str(tmp_path / "events.dlq.jsonl"),
        "OTELPERF_TEST_SUMMARY": str(tmp_path / "summary.json"),
        "OTELPERF_TEST_TOTAL": str(TOTAL),
        **extra,
    }


def test_sigterm_drains_everything_produced(
    postgres_dsn: str, tables: Tables, tmp_path: Path
) -> None:
    """100,000 items produced while a lock holds the sink back, then SIGTERM with all of them
    still queued: the shutdown writes every one within its deadline, none twice."""
    table = tables.create("id int PRIMARY KEY, payload text NOT NULL")
    port = free_port()
    env = _env(postgres_dsn, table, tmp_path, OTELPERF_TEST_MAX_SIZE="100")
    with serve(env, port) as process, psycopg.connect(postgres_dsn) as lock:
        lock.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
        )
        httpx.post(f"http://127.0.0.1:{port}/start", timeout=5).raise_for_status()
        at_sigterm = _wait_progress(port, TOTAL)
        process.send_signal(signal.SIGTERM)
        lock.rollback()  # the sink comes back while the shutdown is draining
        _terminate(process, sent=True)
    assert at_sigterm["written"] == 0  # everything was still queued at SIGTERM
    summary, written, lettered = _check_exactly_once(
        tables, table, tmp_path / "events.dlq.jsonl", tmp_path / "summary.json"
    )
    assert summary["produced"] == TOTAL
    assert len(written) == TOTAL
    assert lettered == []


def test_sigterm_past_the_deadline_dead_letters_the_rest(
    postgres_dsn: str, tables: Tables, tmp_path: Path
) -> None:
    """SIGTERM mid-production while a lock stalls the sink: what the short deadline cannot
    write, including the batch stuck in COPY, is dead-lettered; written + dead-lettered =
    produced, exactly."""
    table = tables.create("id int PRIMARY KEY, payload text NOT NULL")
    port = free_port()
    env = _env(
        postgres_dsn, table, tmp_path,
        OTELPERF_TEST_MAX_SIZE="500", OTELPERF_TEST_RATE="20000", OTELPERF_TEST_DEADLINE="0.5",
    )  # fmt: skip
    with serve(env, port) as process, psycopg.connect(postgres_dsn) as lock:
        httpx.post(f"http://127.0.0.1:{port}/start", timeout=5).raise_for_status()
        _wait_progress(port, 20_000)
        lock.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
        )
        stuck_at = _progress(port)["produced"]
        before = _wait_progress(port, stuck_at + 2_000)  # produced while the sink is stuck
        output = _terminate(process)
        lock.rollback()
    summary, written, lettered = _check_exactly_once(
        tables, table, tmp_path / "events.dlq.jsonl", tmp_path / "summary.json"
    )
    assert before["produced"] <= summary["produced"] < TOTAL  # stopped mid-run
    assert written
    assert lettered
    assert len(written) <= before["written"] + 500  # at most the batch racing the lock landed
    assert "shutdown deadline" in output
    reasons = {record["reason"] for record in read_dead_letters(tmp_path / "events.dlq.jsonl")}
    assert reasons == {"shutdown"}
