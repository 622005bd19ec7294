"""Fixtures for the batcher tests: unique PostgreSQL tables, pools, captured telemetry."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from otelperf._component import ComponentTelemetry
from otelperf.batch import Batcher, BatcherStats
from otelperf.testing import CapturedTelemetry, capture


@pytest.fixture
def captured() -> Iterator[CapturedTelemetry]:
    """A Perf exporting to memory, whose tracer and meter the batcher reports through."""
    with capture() as telemetry:
        yield telemetry


@pytest.fixture
def telemetry(captured: CapturedTelemetry) -> ComponentTelemetry:
    """The ComponentTelemetry a Perf would hand a batcher."""
    return ComponentTelemetry(captured.perf.tracer, captured.perf.meter)


class Tables:
    """Creates uniquely named tables in the test database and drops them afterwards."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.created: list[str] = []

    def create(self, columns: str = "id int PRIMARY KEY, v int") -> str:
        name = f"otelperf_batch_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(name), sql.SQL(columns))
            )
        self.created.append(name)
        return name

    def rows(self, table: str, order: str = "id") -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(
                sql.Identifier(table), sql.SQL(order)
            )
            return [tuple(r) for r in conn.execute(query).fetchall()]

    def count(self, table: str) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            row = conn.execute(query).fetchone()
            return int(row[0]) if row else 0

    def drop_all(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for name in self.created:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                # A test may have renamed its table away; drop that name too.
                conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name + "_away"))
                )


@pytest.fixture
def tables(postgres_dsn: str) -> Iterator[Tables]:
    """Unique tables in the shared test database, dropped after the test."""
    made = Tables(postgres_dsn)
    try:
        yield made
    finally:
        made.drop_all()


@asynccontextmanager
async def open_pool(dsn: str, **kwargs: Any) -> AsyncIterator[AsyncConnectionPool]:
    """A psycopg_pool pool, the same ``connection()`` interface otelperf's pools offer."""
    options: dict[str, Any] = {"min_size": 1, "max_size": 4, "timeout": 10.0}
    options.update(kwargs)
    pool = AsyncConnectionPool(dsn, open=False, **options)
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


async def wait_until(
    condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``condition`` on the event loop (yielding) until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """The records of a dead-letter file (empty if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_accounted(batcher: Batcher, produced: int) -> BatcherStats:
    """The batcher's counts add up, and it saw exactly ``produced`` put calls."""
    stats = batcher.stats()
    assert stats.produced == produced, stats
    assert stats.balanced, stats
    return stats
