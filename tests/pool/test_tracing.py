"""Query spans and db.client.operation.duration, recorded through real SDK providers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import pytest
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from psycopg import sql

from otelperf._component import ComponentTelemetry
from otelperf._instruments import SECONDS_BUCKETS
from otelperf.pool import Pool
from tests.pool.conftest import PoolFactory, Recorded

DURATION = "db.client.operation.duration"


def run(pool: Pool, recorded: Recorded, body: Any) -> Any:
    async def inner() -> Any:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection() as conn:
                return await body(conn)
        finally:
            await pool.stop()

    return asyncio.run(inner())


def test_each_query_is_a_client_span_with_semconv_attributes(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """A query makes one CLIENT span named by its summary, with the stable db attributes."""
    pool = make_pool(min_size=1)

    async def body(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SELECT relname FROM pg_class WHERE relname = %s", ["secret-value"])

    run(pool, recorded, body)
    (span,) = recorded.spans()
    assert span.name == "SELECT pg_class"
    assert span.kind == SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "db.system.name": "postgresql",
        "db.namespace": "test",
        "server.address": "127.0.0.1",
        "server.port": 5432,
        "db.operation.name": "SELECT",
        "db.query.summary": "SELECT pg_class",
    }
    assert span.status.status_code == StatusCode.UNSET


def test_query_text_is_recorded_only_when_asked_and_then_sanitized(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """record_statements puts the text on the span with every literal replaced by '?'."""
    pool = make_pool(min_size=1, record_statements=True)

    async def body(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(
            "SELECT 'hunter2' AS pw, 4111111111111111 AS card, $x$dollar-secret$x$ "
            "WHERE %s::text IS NOT NULL -- comment-secret",
            ["param-secret"],
        )

    run(pool, recorded, body)
    (span,) = recorded.spans()
    assert span.attributes is not None
    assert (
        span.attributes["db.query.text"]
        == "SELECT ? AS pw, ? AS card, ? WHERE %s::text IS NOT NULL"
    )


def test_a_failed_query_carries_its_sqlstate_and_never_its_message(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """A failing query: error.type = db.response.status_code = SQLSTATE, status ERROR, no text."""
    pool = make_pool(min_size=1)

    async def body(conn: psycopg.AsyncConnection[Any]) -> None:
        with pytest.raises(psycopg.errors.UndefinedColumn):
            await conn.execute("SELECT leaked_literal_in_message FROM pg_class")

    run(pool, recorded, body)
    (span,) = recorded.spans()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "42703"
    assert span.attributes["db.response.status_code"] == "42703"
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "42703"
    assert span.events == ()  # no exception event: its message would quote the query
    (point,) = recorded.points(DURATION, **{"error.type": "42703"})
    assert point.attributes["db.response.status_code"] == "42703"
    assert point.count == 1


def test_operation_duration_has_semconv_attributes_and_buckets(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """One point per operation, in seconds, low-cardinality attributes, 100 µs..10 s buckets."""
    pool = make_pool(min_size=1)

    async def body(conn: psycopg.AsyncConnection[Any]) -> None:
        for i in range(3):
            await conn.execute("SELECT %s::int", [i])
        await conn.execute("SELECT pg_sleep(0.05)")
        await conn.execute("SET application_name = 'x'")

    run(pool, recorded, body)
    (select,) = recorded.points(DURATION, **{"db.operation.name": "SELECT"})
    assert dict(select.attributes) == {
        "db.system.name": "postgresql",
        "db.namespace": "test",
        "server.address": "127.0.0.1",
        "server.port": 5432,
        "db.operation.name": "SELECT",
    }
    assert select.count == 4
    assert select.max >= 0.05
    assert tuple(select.explicit_bounds) == SECONDS_BUCKETS
    (set_point,) = recorded.points(DURATION, **{"db.operation.name": "SET"})
    assert set_point.count == 1


def test_query_spans_are_children_of_the_current_span(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """A query inside a request span is that span's child, in the same trace."""
    pool = make_pool(min_size=1)
    tracer = recorded.telemetry.tracer

    async def body(conn: psycopg.AsyncConnection[Any]) -> None:
        with tracer.start_as_current_span("GET /items"):
            await conn.execute("SELECT 1")

    run(pool, recorded, body)
    parent = recorded.spans("GET /items")[0]
    (child,) = recorded.spans("SELECT")
    assert child.parent is not None
    assert child.parent.span_id == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id


def test_executemany_is_one_batch_span(
    make_pool: PoolFactory, recorded: Recorded, postgres_dsn: str
) -> None:
    """executemany of 3 parameter sets: one 'BATCH INSERT' span with db.operation.batch.size 3."""
    pool = make_pool(min_size=1)

    async def body(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("CREATE TEMP TABLE batch_t (a int)")
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO batch_t (a) VALUES (%s)", [(1,), (2,), (3,)])
            await cur.executemany("INSERT INTO batch_t (a) VALUES (%s)", [(4,)])

    run(pool, recorded, body)
    (batch,) = recorded.spans("BATCH INSERT batch_t")
    assert batch.attributes is not None
    assert batch.attributes["db.operation.name"] == "BATCH INSERT"
    assert batch.attributes["db.operation.batch.size"] == 3
    (single,) = recorded.spans("INSERT batch_t")  # one parameter set is not a batch
    assert single.attributes is not None
    assert "db.operation.batch.size" not in single.attributes
    assert recorded.points(DURATION, **{"db.operation.name": "BATCH INSERT"})[0].count == 1


def test_a_stream_span_ends_when_the_consumer_stops_early(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """stream(): one span, ended without error when the caller breaks out early."""
    pool = make_pool(min_size=1)

    async def body(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
        got = []
        async with conn.cursor() as cur:
            async for row in cur.stream("SELECT generate_series(1, 1000)"):
                got.append(row)
                if len(got) == 3:
                    break
            await cur.execute("SELECT 1")  # the connection is usable again
        return got

    assert run(pool, recorded, body) == [(1,), (2,), (3,)]
    spans = recorded.spans("SELECT")
    assert len(spans) == 2
    assert all(s.status.status_code == StatusCode.UNSET for s in spans)


def test_composed_queries_are_named_too(make_pool: PoolFactory, recorded: Recorded) -> None:
    """psycopg.sql.Composed queries are rendered to text for naming."""
    pool = make_pool(min_size=1)

    async def body(conn: psycopg.AsyncConnection[Any]) -> None:
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.Identifier("relname"), sql.Identifier("pg_class")
        )
        await conn.execute(query)

    run(pool, recorded, body)
    (span,) = recorded.spans()
    assert span.name == 'SELECT "pg_class"'


def test_sync_twin_queries_are_traced_the_same_way(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """The sync cursor makes the same spans and points as the async one."""
    pool = make_pool(min_size=1)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:

            def work() -> None:
                with pool.sync.connection() as conn:
                    conn.execute("SELECT 1")
                    with pytest.raises(psycopg.errors.UndefinedTable):
                        conn.execute("SELECT * FROM otelperf_missing_table")

            await asyncio.to_thread(work)
        finally:
            await pool.stop()

    asyncio.run(inner())
    assert [s.name for s in recorded.spans()] == ["SELECT", "SELECT otelperf_missing_table"]
    assert recorded.spans()[1].attributes["error.type"] == "42P01"  # type: ignore[index]


class ExplodingTracer(Tracer):
    """A tracer whose every span start raises."""

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer is broken")

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer is broken")


def test_broken_telemetry_never_breaks_a_query(
    make_pool: PoolFactory, recorded: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    """A tracer that raises costs a counter and one log line; the queries still run."""
    pool = make_pool(min_size=1)
    telemetry = ComponentTelemetry(ExplodingTracer(), recorded.telemetry.meter)

    async def inner() -> list[Any]:
        await pool.start(telemetry)
        try:
            out = []
            for _ in range(3):
                async with pool.connection() as conn:
                    out.append(await (await conn.execute("SELECT 7")).fetchone())
            return out
        finally:
            await pool.stop()

    with caplog.at_level(logging.WARNING, logger="otelperf.pool"):
        assert asyncio.run(inner()) == [(7,)] * 3
    assert pool._queries is not None
    assert pool._queries.errors == 3
    logged = [r for r in caplog.records if "query telemetry failed" in r.getMessage()]
    assert len(logged) == 1
