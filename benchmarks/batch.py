"""Batcher throughput: 100,000 small rows into PostgreSQL, otelperf against the usual ways.

Contenders, each writing the same pre-built rows ``(id, ts, kind, payload)`` into its
own table through the same ``psycopg_pool.AsyncConnectionPool``:

- ``otelperf``: ``await batcher.put(row)`` for every row into a Batcher with the
  postgres COPY sink (batches of ``--batch``, concurrency 1, real SDK telemetry:
  spans through a ``BatchSpanProcessor``, metrics to an ``InMemoryMetricReader``),
  then ``await batcher.flush()``; timed from the first put to the flush's return.
- ``copy-loop`` (the floor): a hand-written loop on one connection that COPYs the
  same batches, one commit each. What the batcher adds is its cost over this.
- ``copy-all``: for reference, one COPY of all rows and one commit (no batching at
  all: the most a single client connection can ingest here).
- ``executemany``: one ``cursor.executemany`` INSERT of all rows, one commit.
- ``row-by-row``: one INSERT and one commit per row, measured on ``--sample`` rows
  (default 5,000) and extrapolated to rows/s, unless ``--full-row-by-row``.

Rounds are interleaved (every contender once per round, in shuffled order, otelperf
and copy-loop always back to back) so that drift on a shared machine hits all alike;
medians over rounds and the median of the per-round ratios are printed, the goals
judged on the latter (wall clock). Each run's client CPU time is printed too. Quote
the ratios. Each run's table is checked after
the run (row count and id sum) or the benchmark exits with status 1.

    python benchmarks/batch.py                 # 7 rounds of 100,000 rows
    python benchmarks/batch.py --rounds 3 --rows 20000
    OTELPERF_BENCH_POSTGRES_DSN=postgresql://... python benchmarks/batch.py
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import psycopg
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from otelperf._component import ComponentTelemetry
from otelperf.batch import Batcher, PostgresCopySink

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
COLUMNS = ("id", "ts", "kind", "payload")
KINDS = ("click", "view", "purchase", "signup")

Row = tuple[int, datetime.datetime, str, str]
Runner = Callable[[str, Sequence[Row]], Awaitable[float]]


class _CountingExporter(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


def make_rows(count: int) -> list[Row]:
    base = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    return [
        (i, base + datetime.timedelta(seconds=i), KINDS[i % 4], f"payload-{i:08d}")
        for i in range(count)
    ]


class Bench:
    def __init__(self, dsn: str, batch: int) -> None:
        self.dsn = dsn
        self.batch = batch
        self.pool = AsyncConnectionPool(dsn, min_size=2, max_size=4, open=False)
        self.tables: dict[str, str] = {}
        self.spans = _CountingExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = ComponentTelemetry(
            self.tracer_provider.get_tracer("bench"), self.meter_provider.get_meter("bench")
        )
        self.last_put_seconds = 0.0

    async def open(self, names: Sequence[str]) -> None:
        await self.pool.open(wait=True)
        suffix = uuid.uuid4().hex[:10]
        async with self.pool.connection() as conn:
            for name in names:
                table = f"bench_batch_{name.replace('-', '_')}_{suffix}"
                await conn.execute(
                    sql.SQL(
                        "CREATE TABLE {} (id bigint NOT NULL, ts timestamptz NOT NULL, "
                        "kind text NOT NULL, payload text NOT NULL)"
                    ).format(sql.Identifier(table))
                )
                self.tables[name] = table

    async def close(self) -> None:
        try:
            async with self.pool.connection() as conn:
                for table in self.tables.values():
                    await conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table))
                    )
        finally:
            await self.pool.close()
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()

    async def reset(self, table: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))

    async def check(self, table: str, rows: Sequence[Row]) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL("SELECT count(*), coalesce(sum(id), 0) FROM {}").format(
                    sql.Identifier(table)
                )
            )
            found = await cur.fetchone()
        expected = (len(rows), sum(r[0] for r in rows))
        if found is None or tuple(found) != expected:
            print(f"FAILED: table {table} holds {found}, expected {expected}", file=sys.stderr)
            raise SystemExit(1)

    # --- contenders ----------------------------------------------------------

    async def otelperf(self, table: str, rows: Sequence[Row]) -> float:
        sink = PostgresCopySink(self.pool, table=table, columns=COLUMNS)
        batcher = Batcher(
            "bench", sink, max_size=self.batch, max_queue=max(len(rows), 1000, self.batch)
        )
        await batcher.start(self.telemetry)
        try:
            put = batcher.put
            started = time.perf_counter()
            for row in rows:
                await put(row)
            self.last_put_seconds = time.perf_counter() - started
            await batcher.flush()
            elapsed = time.perf_counter() - started
        finally:
            await batcher.stop()
        stats = batcher.stats()
        if stats.written != len(rows) or not stats.balanced:
            print(f"FAILED: batcher stats {stats}", file=sys.stderr)
            raise SystemExit(1)
        return elapsed

    async def copy_loop(self, table: str, rows: Sequence[Row]) -> float:
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        )
        size = self.batch
        batches = [rows[i : i + size] for i in range(0, len(rows), size)]
        started = time.perf_counter()
        async with self.pool.connection() as conn:
            for batch in batches:
                async with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    for row in batch:
                        await copy.write_row(row)
                await conn.commit()
        return time.perf_counter() - started

    def _insert(self, table: str) -> sql.Composed:
        return sql.SQL("INSERT INTO {} ({}) VALUES (%s, %s, %s, %s)").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        )

    async def copy_all(self, table: str, rows: Sequence[Row]) -> float:
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        )
        started = time.perf_counter()
        async with self.pool.connection() as conn:
            async with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for row in rows:
                    await copy.write_row(row)
            await conn.commit()
        return time.perf_counter() - started

    async def executemany(self, table: str, rows: Sequence[Row]) -> float:
        insert = self._insert(table)
        started = time.perf_counter()
        async with self.pool.connection() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(insert, rows)
            await conn.commit()
        return time.perf_counter() - started

    async def row_by_row(self, table: str, rows: Sequence[Row]) -> float:
        insert = self._insert(table)
        started = time.perf_counter()
        async with self.pool.connection() as conn:
            for row in rows:
                await conn.execute(insert, row)
                await conn.commit()
        return time.perf_counter() - started


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def run(args: argparse.Namespace) -> int:
    rows = make_rows(args.rows)
    sample = rows if args.full_row_by_row else rows[: min(args.sample, len(rows))]
    bench = Bench(args.dsn, args.batch)
    contenders: dict[str, tuple[Runner, Sequence[Row]]] = {
        "otelperf": (bench.otelperf, rows),
        "copy-loop": (bench.copy_loop, rows),
        "copy-all": (bench.copy_all, rows),
        "executemany": (bench.executemany, rows),
        "row-by-row": (bench.row_by_row, sample),
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    cpu_us: dict[str, list[float]] = {name: [] for name in contenders}
    put_us: list[float] = []
    try:
        await bench.open(list(contenders))
        # Warm-up: connections, server caches, the SDK's first span and metric.
        for name, (runner, data) in contenders.items():
            warm = data[: min(len(data), 2000)]
            await bench.reset(bench.tables[name])
            await runner(bench.tables[name], warm)
        for round_no in range(1, args.rounds + 1):
            # otelperf and its floor run back to back (in either order), so the ratio the
            # goal is judged on compares runs seconds apart; the others go anywhere.
            pair = random.sample(["otelperf", "copy-loop"], 2)
            slots: list[list[str]] = [pair, ["copy-all"], ["executemany"], ["row-by-row"]]
            random.shuffle(slots)
            line = []
            for name in [n for slot in slots for n in slot]:
                runner, data = contenders[name]
                table = bench.tables[name]
                await bench.reset(table)
                cpu = time.process_time()
                elapsed = await runner(table, data)
                cpu = time.process_time() - cpu
                await bench.check(table, data)
                rates[name].append(len(data) / elapsed)
                cpu_us[name].append(cpu / len(data) * 1e6)
                if name == "otelperf":
                    put_us.append(bench.last_put_seconds / len(data) * 1e6)
                line.append(f"{name} {len(data) / elapsed:,.0f}/s")
            paired = rates["otelperf"][-1] / rates["copy-loop"][-1]
            print(f"round {round_no}: " + ", ".join(line) + f"  (otelperf/copy-loop {paired:.2f})")
    finally:
        await bench.close()

    print()
    print(
        f"{args.rows:,} rows (id bigint, ts timestamptz, kind text, payload text), batches of "
        f"{args.batch}, {args.rounds} interleaved rounds; python {platform.python_version()}, "
        f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), {os.cpu_count()} CPUs"
    )
    if not args.full_row_by_row:
        print(f"row-by-row: measured on the first {len(sample):,} rows of each round and "
              "extrapolated to rows/s (the full run would take minutes per round)")  # fmt: skip
    print()
    print(f"{'contender':<14}{'median rows/s':>16}{'min':>12}{'max':>12}{'client CPU µs/row':>20}")
    for name, values in rates.items():
        print(
            f"{name:<14}{_median(values):>16,.0f}{min(values):>12,.0f}{max(values):>12,.0f}"
            f"{_median(cpu_us[name]):>20.2f}"
        )
    print()
    print(f"otelperf put(): median {_median(put_us):.2f} µs per row (the producer's side alone)")
    floor_cpu = _median(
        [c / o for c, o in zip(cpu_us["copy-loop"], cpu_us["otelperf"], strict=True)]
    )
    print(
        f"client CPU, copy-loop/otelperf per round (median): {floor_cpu:.2f}x "
        "(the batcher's own cost, database time left out)"
    )
    print(f"spans exported: {bench.spans.count:,} flush spans")
    print()

    def ratio(a: str, b: str) -> tuple[float, float]:
        per_round = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
        return _median(rates[a]) / _median(rates[b]), _median(per_round)

    goals = {"row-by-row": 100.0, "copy-loop": 0.8}
    print(f"{'otelperf vs':<14}{'ratio of medians':>18}{'median per-round':>18}  goal")
    for other in ("copy-loop", "copy-all", "executemany", "row-by-row"):
        of_medians, per_round = ratio("otelperf", other)
        goal = goals.get(other)
        verdict = ""
        if goal is not None:
            verdict = f">= {goal:g}x  {'PASS' if per_round >= goal else 'FAIL'}"
        print(f"{other:<14}{of_medians:>17.2f}x{per_round:>17.2f}x  {verdict}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("OTELPERF_BENCH_POSTGRES_DSN", DEFAULT_DSN))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sample", type=int, default=5_000, help="row-by-row rows per round")
    parser.add_argument("--full-row-by-row", action="store_true")
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
