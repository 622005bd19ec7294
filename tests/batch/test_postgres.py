"""The batcher writing to a real PostgreSQL through its COPY sink: flushes, backpressure,
poison rows and an unavailable table, with exact accounting."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from otelperf._component import ComponentTelemetry
from otelperf.batch import (
    Backoff,
    Batcher,
    BatcherError,
    BatcherFullError,
    PostgresCopySink,
    build_batcher,
)
from otelperf.config import load_config
from otelperf.testing import CapturedTelemetry
from tests.batch.conftest import (
    Tables,
    assert_accounted,
    open_pool,
    read_dead_letters,
    wait_until,
)

FOREVER = 3600.0


def _batch_sizes(captured: CapturedTelemetry) -> list[int]:
    """Sizes of the batches flushed so far, from the flush spans."""
    return [
        int(dict(span.attributes or {})["otelperf.batch.size"])  # type: ignore[arg-type]
        for span in captured.spans()
        if span.name.startswith("flush ")
    ]


async def _locking(dsn: str, table: str) -> psycopg.AsyncConnection[Any]:
    """A connection holding an exclusive lock on ``table`` until it rolls back."""
    conn = await psycopg.AsyncConnection.connect(dsn)
    await conn.execute(
        sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
    )
    return conn


def test_flush_by_size(
    postgres_dsn: str, tables: Tables, telemetry: ComponentTelemetry, captured: CapturedTelemetry
) -> None:
    """Full batches are written at once; a partial one waits (max_wait is long) until stop."""
    table = tables.create()

    async def main() -> None:
        async with open_pool(postgres_dsn) as pool:
            sink = PostgresCopySink(pool, table=table, columns=["id", "v"])
            batcher = Batcher("events", sink, max_size=10, max_wait=FOREVER)
            await batcher.start(telemetry)
            for i in range(25):
                await batcher.put((i, i * 2))
            await wait_until(lambda: tables.count(table) == 20, what="two full batches")
            await wait_until(lambda: len(_batch_sizes(captured)) == 2, what="their spans")
            assert batcher.stats().queued == 5  # the partial batch is not due
            assert _batch_sizes(captured) == [10, 10]
            await batcher.stop()
            assert_accounted(batcher, 25)

    asyncio.run(main())
    assert tables.rows(table) == [(i, i * 2) for i in range(25)]
    assert _batch_sizes(captured) == [10, 10, 5]


def test_flush_by_time_on_a_timer(
    postgres_dsn: str, tables: Tables, telemetry: ComponentTelemetry
) -> None:
    """A partial batch is written once its oldest item waited max_wait, with no new item."""
    table = tables.create()
    max_wait = 0.5

    async def main() -> tuple[float, float]:
        async with open_pool(postgres_dsn) as pool:
            sink = PostgresCopySink(pool, table=table, columns=["id", "v"])
            batcher = Batcher("events", sink, max_size=1000, max_wait=max_wait)
            await batcher.start(telemetry)
            first = time.monotonic()
            await batcher.put((1, 1))
            await asyncio.sleep(
                0.3
            )  # the second item arrives later: the batch's age is the first's
            second = time.monotonic()
            await batcher.put((2, 2))
            await wait_until(lambda: batcher.stats().written == 2, what="the timed flush")
            done = time.monotonic()
            await batcher.stop()
            assert_accounted(batcher, 2)
            return done - first, done - second

    since_first, since_second = asyncio.run(main())
    assert since_first >= max_wait
    assert since_second < max_wait  # flushed by the first item's age, not the last's
    assert tables.rows(table) == [(1, 1), (2, 2)]


@pytest.mark.parametrize("on_full", ["block", "drop_oldest", "drop_newest", "raise"])
def test_backpressure_when_the_sink_is_stuck(
    postgres_dsn: str, tables: Tables, telemetry: ComponentTelemetry, on_full: Any
) -> None:
    """With a batch stuck on a table lock and the queue full, each on_full mode does what it
    says, every drop is counted, and what was accepted is written once the lock goes."""
    table = tables.create()

    async def main() -> list[int]:
        async with open_pool(postgres_dsn) as pool:
            sink = PostgresCopySink(pool, table=table, columns=["id", "v"])
            batcher = Batcher(
                "events", sink, max_size=10, max_queue=20, max_wait=FOREVER,
                on_full=on_full, block_timeout=0.3,
            )  # fmt: skip
            await batcher.start(telemetry)
            lock = await _locking(postgres_dsn, table)
            for i in range(10):
                await batcher.put((i, 0))
            await wait_until(lambda: batcher.stats().in_flight == 10, what="a batch in flight")
            for i in range(10, 20):  # fills the queue: 10 being written + 10 waiting
                assert await batcher.put((i, 0)) is True
            assert batcher.stats().held == 20
            accepted = list(range(20))
            late = None
            if on_full == "block":
                started = time.monotonic()
                with pytest.raises(BatcherFullError, match="block_timeout"):
                    await batcher.put((20, 0))
                assert time.monotonic() - started >= 0.3
                late = asyncio.ensure_future(batcher.put((21, 0)))  # waits for room
                await asyncio.sleep(0.05)
                assert not late.done()
                accepted.append(21)
            elif on_full == "drop_oldest":
                for i in range(20, 25):
                    assert await batcher.put((i, 0)) is True
                accepted = [*range(10), *range(15, 25)]  # 10..14 evicted; 0..9 were in flight
            elif on_full == "drop_newest":
                for i in range(20, 25):
                    assert await batcher.put((i, 0)) is False
            else:
                with pytest.raises(BatcherFullError, match="on_full is 'raise'"):
                    await batcher.put((20, 0))
            await lock.rollback()
            await lock.close()
            if late is not None:
                assert await asyncio.wait_for(late, 10) is True
            await batcher.stop()
            stats = batcher.stats()
            expected_drops = {"block": 1, "drop_oldest": 5, "drop_newest": 5, "raise": 1}[on_full]
            reason = "evicted" if on_full == "drop_oldest" else "queue_full"
            assert stats.dropped == stats.dropped_by_reason[reason] == expected_drops
            assert stats.written == len(accepted)
            assert stats.dead_lettered == 0
            produced = {"block": 22, "drop_oldest": 25, "drop_newest": 25, "raise": 21}[on_full]
            assert_accounted(batcher, produced)
            return accepted

    accepted = asyncio.run(main())
    assert [r[0] for r in tables.rows(table)] == accepted


@pytest.mark.parametrize(
    ("poison", "error_type"),
    [
        ((37, -1), "psycopg.errors.CheckViolation"),
        ((37, "not a number"), "psycopg.errors.InvalidTextRepresentation"),
        ((37, 1, "extra"), "psycopg.errors.BadCopyFileFormat"),
        ((5, 0), "psycopg.errors.UniqueViolation"),  # id 5 is also in the batch
        ({"id": 37}, "builtins.KeyError"),  # a mapping without the column v
    ],
    ids=["check", "bad-value", "wrong-width", "duplicate-key", "missing-key"],
)
def test_poison_row_is_dead_lettered_alone(
    postgres_dsn: str,
    tables: Tables,
    telemetry: ComponentTelemetry,
    captured: CapturedTelemetry,
    tmp_path: Path,
    poison: Any,
    error_type: str,
) -> None:
    """One row the database refuses ends in the dead-letter file, alone, with its error;
    its 99 batch-mates are written."""
    table = tables.create("id int PRIMARY KEY, v int CHECK (v >= 0)")
    dead = tmp_path / "events.dlq.jsonl"
    good = [(i, i) for i in range(100) if i != 37]

    async def main() -> None:
        async with open_pool(postgres_dsn) as pool:
            sink = PostgresCopySink(pool, table=table, columns=["id", "v"])
            batcher = Batcher("events", sink, max_size=100, max_wait=FOREVER, dead_letter=dead)
            await batcher.start(telemetry)
            for item in [*good[:37], poison, *good[37:]]:
                await batcher.put(item)
            await batcher.flush()
            stats = assert_accounted(batcher, 100)
            assert (stats.written, stats.dead_lettered) == (99, 1)
            assert stats.retried > 0  # the split re-sent the halves
            await batcher.stop()

    asyncio.run(main())
    assert tables.rows(table) == good
    (record,) = read_dead_letters(dead)
    expected_item = poison if isinstance(poison, dict) else list(poison)
    assert record["item"] == expected_item
    assert record["reason"] == "rejected"
    assert record["batcher"] == "events"
    assert record["error_type"] == error_type
    assert record["error"]
    (span,) = [s for s in captured.spans() if s.name == "flush events"]
    assert span.status.status_code.name == "ERROR"
    attributes = dict(span.attributes or {})
    assert attributes["otelperf.batch.written"] == 99
    assert attributes["otelperf.batch.not_written"] == 1
    assert any(event.name == "otelperf.batch.split" for event in span.events)


def test_sink_down_then_back_within_retries(
    postgres_dsn: str, tables: Tables, telemetry: ComponentTelemetry, tmp_path: Path
) -> None:
    """The table renamed away, then back: batches are retried with backoff until it returns,
    and every item is written exactly once."""
    table = tables.create()
    dead = tmp_path / "dlq.jsonl"

    async def main() -> None:
        async with (
            open_pool(postgres_dsn) as pool,
            await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as admin,
        ):
            sink = PostgresCopySink(pool, table=table, columns=["id", "v"])
            batcher = Batcher(
                "events", sink, max_size=10, max_wait=0.05, dead_letter=dead,
                retry=Backoff(attempts=100, base=0.01, max_delay=0.05),
            )  # fmt: skip
            await batcher.start(telemetry)
            await admin.execute(_rename(table, table + "_away"))
            for i in range(30):
                await batcher.put((i, i))
            await wait_until(lambda: batcher.stats().retried >= 10, what="a failed attempt")
            assert batcher.stats().written == 0
            await admin.execute(_rename(table + "_away", table))
            await batcher.flush()
            stats = assert_accounted(batcher, 30)
            assert (stats.written, stats.dead_lettered, stats.dropped) == (30, 0, 0)
            await batcher.stop()

    asyncio.run(main())
    assert tables.rows(table) == [(i, i) for i in range(30)]
    assert read_dead_letters(dead) == []


def test_sink_down_longer_than_retries(
    postgres_dsn: str, tables: Tables, telemetry: ComponentTelemetry, tmp_path: Path
) -> None:
    """Items produced while the table is away, past their retries, are dead-lettered; items
    produced during and after its return are written; none is both, none is missing."""
    table = tables.create()
    dead = tmp_path / "dlq.jsonl"
    total = 3000

    async def main() -> None:
        async with (
            open_pool(postgres_dsn) as pool,
            await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as admin,
        ):
            sink = PostgresCopySink(pool, table=table, columns=["id", "v"])
            batcher = Batcher(
                "events", sink, max_size=50, max_wait=0.02, dead_letter=dead,
                retry=Backoff(attempts=3, base=0.01, max_delay=0.02),
            )  # fmt: skip
            await batcher.start(telemetry)

            async def produce() -> None:
                for i in range(total):
                    await batcher.put((i, i))
                    if i % 50 == 0:
                        await asyncio.sleep(0.002)  # a steady producer, not one burst

            producer = asyncio.ensure_future(produce())
            await wait_until(lambda: batcher.stats().written >= 200, what="writes before")
            await admin.execute(_rename(table, table + "_away"))
            await wait_until(lambda: batcher.stats().dead_lettered >= 100, what="dead letters")
            await admin.execute(_rename(table + "_away", table))
            await producer
            await batcher.stop()
            stats = assert_accounted(batcher, total)
            assert stats.dropped == 0
            assert stats.written + stats.dead_lettered == total

    asyncio.run(main())
    written = [r[0] for r in tables.rows(table)]
    letters = read_dead_letters(dead)
    lettered = [r["item"][0] for r in letters]
    assert {r["reason"] for r in letters} == {"retries_exhausted"}
    assert {r["error_type"] for r in letters} == {"psycopg.errors.UndefinedTable"}
    assert len(written) == len(set(written))
    assert len(lettered) == len(set(lettered))
    assert not set(written) & set(lettered)
    assert sorted(written + lettered) == list(range(total))
    assert written[:200] == list(range(200))
    assert max(written) == total - 1


def _rename(old: str, new: str) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))


def test_mapping_items_by_column(
    postgres_dsn: str, tables: Tables, telemetry: ComponentTelemetry
) -> None:
    """Items may be mappings keyed by column name, lists, or tuples, in one batch."""
    table = tables.create("id int PRIMARY KEY, kind text, v int")

    async def main() -> None:
        async with open_pool(postgres_dsn) as pool:
            sink = PostgresCopySink(pool, table=table, columns=["v", "id", "kind"])
            batcher = Batcher("events", sink, max_size=10)
            await batcher.start(telemetry)
            await batcher.put({"id": 1, "kind": "a", "v": 10, "ignored": True})
            await batcher.put([20, 2, "b"])
            await batcher.put((30, 3, None))
            await batcher.stop()
            assert batcher.stats().written == 3

    asyncio.run(main())
    assert tables.rows(table) == [(1, "a", 10), (2, "b", 20), (3, None, 30)]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["id", "nope"], r"has no column 'nope'; its columns are id, v"),
        (None, r"table '\S+_missing' does not exist .* pool 'main'"),
    ],
    ids=["column", "table"],
)
def test_start_refuses_a_missing_table_or_column(
    postgres_dsn: str,
    tables: Tables,
    telemetry: ComponentTelemetry,
    columns: list[str] | None,
    message: str,
) -> None:
    """A table or column that does not exist fails the start with a message naming it and
    the config key to fix."""
    table = tables.create()
    config = load_config(
        {
            "version": 1,
            "service": {"name": "t"},
            "pools": {"main": {"conninfo": postgres_dsn}},
            "batchers": {
                "events": {
                    "sink": {
                        "postgres": {
                            "pool": "main",
                            "table": table if columns else table + "_missing",
                            "columns": columns or ["id", "v"],
                        }
                    }
                }
            },
        }
    )

    async def main() -> None:
        async with open_pool(postgres_dsn) as pool:
            pools = {"main": pool}
            batcher = build_batcher("events", config.batchers["events"], pools.__getitem__)
            with pytest.raises(BatcherError, match=message) as caught:
                await batcher.start(telemetry)
            assert "batchers.events.sink.postgres." in str(caught.value)
            with pytest.raises(BatcherError, match=message):
                await batcher.ping()

    asyncio.run(main())


def test_ping_reaches_the_table(
    postgres_dsn: str, tables: Tables, telemetry: ComponentTelemetry
) -> None:
    """ping() succeeds against an existing table and names the pool when the server is down."""
    table = tables.create()

    async def main() -> None:
        async with open_pool(postgres_dsn) as pool:
            batcher = Batcher("events", PostgresCopySink(pool, table=table, columns=["id"]))
            await batcher.ping()
        down = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=1"
        async with open_pool(down, min_size=0, timeout=0.5) as pool:
            sink = PostgresCopySink(pool, table=table, columns=["id"], pool_name="main")
            with pytest.raises(BatcherError, match="cannot reach PostgreSQL through pool 'main'"):
                await Batcher("events", sink).ping()

    asyncio.run(main())
