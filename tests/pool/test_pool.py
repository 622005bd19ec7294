"""The Pool component against the real PostgreSQL: lifecycle, recovery, transactions, errors."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from otelperf._component import Component
from otelperf._errors import OtelperfError
from otelperf.pool import Pool, PoolExhaustedError, build_pool
from tests.pool.conftest import Admin, PoolFactory, Recorded, TcpProxy, config, eventually


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    """A table of this test only (id serial, kind text), dropped afterwards."""
    name = f"otelperf_pool_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, kind text NOT NULL)")
        yield name
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def rows(postgres_dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres_dsn) as conn:
        return conn.execute(f"SELECT kind FROM {table} ORDER BY id").fetchall()


def test_pool_implements_the_component_contract(make_pool: PoolFactory) -> None:
    """A Pool is a Component: name, start, stop, readiness_check, ping."""
    pool = make_pool()
    assert isinstance(pool, Component)
    assert pool.name == "main"
    assert pool.readiness_check() is not None


def test_building_a_pool_does_no_io(postgres_dsn: str) -> None:
    """build_pool on an unreachable server succeeds: nothing connects before start()."""
    pool = build_pool("main", config(conninfo="postgresql://nobody@127.0.0.1:1/none"))
    assert pool.stats().open is False
    assert "not open" in repr(pool)


def test_eager_open_waits_for_min_size_and_stop_closes_everything(
    make_pool: PoolFactory, recorded: Recorded, admin: Admin
) -> None:
    """open: eager has min_size connections when start() returns; stop() closes them all."""
    pool = make_pool(min_size=3, max_size=5)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        assert pool.stats().idle == 3
        assert admin.count() == 3
        await pool.stop()
        await pool.stop()  # idempotent
        await admin.await_for(lambda states: states == [])

    asyncio.run(inner())


def test_lazy_open_connects_on_first_use(
    make_pool: PoolFactory, recorded: Recorded, admin: Admin
) -> None:
    """open: lazy opens nothing at start and serves the first checkout."""
    pool = make_pool(min_size=2, max_size=2, open="lazy")

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            assert admin.count() == 0
            assert pool.stats().open is False
            async with pool.connection() as conn:
                assert await (await conn.execute("SELECT 40 + 2")).fetchone() == (42,)
            await admin.await_for(lambda states: len(states) == 2)
        finally:
            await pool.stop()

    asyncio.run(inner())


def test_use_before_start_and_after_stop_says_what_to_do(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """A checkout outside the lifespan raises an OtelperfError naming the pool and the fix."""
    pool = make_pool(min_size=0)

    async def inner() -> None:
        with pytest.raises(OtelperfError, match=r"pool 'main' is not started.*lifespan"):
            async with pool.connection():
                pass
        await pool.start(recorded.telemetry)
        await pool.stop()
        with pytest.raises(OtelperfError, match="pool 'main' is closed"):
            async with pool.connection():
                pass
        with pytest.raises(OtelperfError, match=r"pool 'main\.sync' is closed"):
            await asyncio.to_thread(lambda: pool.sync.connection().__enter__())

    asyncio.run(inner())


def test_a_pool_can_start_again_after_stop(
    make_pool: PoolFactory, recorded: Recorded, admin: Admin
) -> None:
    """start() after stop() opens fresh connections (a restarted lifespan)."""
    pool = make_pool(min_size=1, max_size=1)

    async def inner() -> None:
        for _ in range(2):
            await pool.start(recorded.telemetry)
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
            await pool.stop()
        await admin.await_for(lambda states: states == [])

    asyncio.run(inner())


def test_terminated_backends_are_replaced_before_the_next_checkout(
    make_pool: PoolFactory, recorded: Recorded, admin: Admin
) -> None:
    """After pg_terminate_backend on every pooled connection, the next checkouts just work."""
    pool = make_pool(min_size=3, max_size=3)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            before = {r[0] for r in await _pids(pool, 3)}
            assert admin.terminate() == 3
            await admin.await_for(lambda states: states == [])  # the backends are gone
            started = time.perf_counter()
            after = {r[0] for r in await _pids(pool, 3)}
            assert time.perf_counter() - started < 2  # no backoff sleeps
            assert before.isdisjoint(after)
            assert pool.stats().connections_lost == 3
            assert pool.stats().checkouts == 6
        finally:
            await pool.stop()

    asyncio.run(inner())
    lost = recorded.value("otelperf.pool.connection.lost")
    assert lost == 3


async def _pids(pool: Pool, n: int) -> list[tuple[Any, ...]]:
    """The backend pids of n connections checked out at the same time."""
    release = asyncio.Event()
    got: list[tuple[Any, ...]] = []

    async def one() -> None:
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
            assert row is not None
            got.append(row)
            if len(got) == n:
                release.set()
            await release.wait()

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 10)
    return got


def test_without_check_a_terminated_connection_fails_once(
    make_pool: PoolFactory, recorded: Recorded, admin: Admin
) -> None:
    """check: false hands out the dead connection (proving the check is what saves the caller)."""
    pool = make_pool(min_size=1, max_size=1, check=False)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            admin.terminate()
            await admin.await_for(lambda states: states == [])
            with pytest.raises(psycopg.OperationalError):
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")
            async with pool.connection(timeout=5) as conn:  # the pool replaced it
                await conn.execute("SELECT 1")
        finally:
            await pool.stop()

    asyncio.run(inner())


def test_check_idle_zero_pays_a_round_trip_on_every_checkout(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """With check_idle 0 every checkout runs psycopg_pool's check (a round trip) first."""
    pool = make_pool(min_size=1, max_size=1, check_idle="0")
    calls = 0

    async def inner() -> None:
        nonlocal calls
        await pool.start(recorded.telemetry)
        try:
            assert pool._pool is not None
            original = pool._pool.check_connection

            async def counting(conn: Any) -> None:
                nonlocal calls
                calls += 1
                await original(conn)

            pool._pool.check_connection = counting  # type: ignore[method-assign]
            for _ in range(3):
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")
        finally:
            await pool.stop()

    asyncio.run(inner())
    assert calls == 3


@pytest.mark.parametrize("explicit", [True, False], ids=["transaction-block", "implicit"])
def test_a_handler_raising_in_a_transaction_leaves_nothing_open(
    make_pool: PoolFactory,
    recorded: Recorded,
    admin: Admin,
    table: str,
    postgres_dsn: str,
    explicit: bool,
) -> None:
    """An exception inside the block rolls back: no 'idle in transaction', no rows written."""
    pool = make_pool(min_size=1, max_size=1)

    async def handler() -> None:
        async with pool.connection() as conn:
            if explicit:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {table} (kind) VALUES ('lost')")
                    raise RuntimeError("handler failed")
            await conn.execute(f"INSERT INTO {table} (kind) VALUES ('lost')")
            raise RuntimeError("handler failed")

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            with pytest.raises(RuntimeError, match="handler failed"):
                await handler()
            states = await admin.await_for(lambda states: len(states) == 1)
            assert states == ["idle"]
            async with pool.connection() as conn:
                await conn.execute(f"INSERT INTO {table} (kind) VALUES ('kept')")
        finally:
            await pool.stop()

    asyncio.run(inner())
    assert rows(postgres_dsn, table) == [("kept",)]


def test_a_connection_returned_in_a_failed_transaction_is_reset(
    make_pool: PoolFactory, recorded: Recorded, admin: Admin, table: str, postgres_dsn: str
) -> None:
    """A caller that swallows an SQL error returns an aborted transaction; the next one is clean."""
    pool = make_pool(min_size=1, max_size=1)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection() as conn:
                await conn.execute(f"INSERT INTO {table} (kind) VALUES ('aborted')")
                with pytest.raises(psycopg.errors.UndefinedTable):
                    await conn.execute("SELECT * FROM no_such_table_otelperf")
            assert await admin.await_for(lambda states: len(states) == 1) == ["idle"]
            async with pool.connection() as conn:
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                await conn.execute(f"INSERT INTO {table} (kind) VALUES ('next')")
        finally:
            await pool.stop()

    asyncio.run(inner())
    assert rows(postgres_dsn, table) == [("next",)]


def test_connection_settings_changed_by_a_borrower_do_not_leak(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """autocommit, read_only, isolation level and row_factory are back to defaults next time."""
    pool = make_pool(min_size=1, max_size=1)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection() as conn:
                await conn.set_autocommit(True)
                await conn.set_read_only(True)
                await conn.set_isolation_level(psycopg.IsolationLevel.SERIALIZABLE)
                conn.row_factory = dict_row
                first = id(conn)
            async with pool.connection() as conn:
                assert id(conn) == first  # the same connection, reset
                assert conn.autocommit is False
                assert conn.read_only is None
                assert conn.isolation_level is None
                assert await (await conn.execute("SELECT 1 AS one")).fetchone() == (1,)

            def sync_side() -> Any:
                with pool.sync.connection() as conn:
                    conn.autocommit = True
                    conn.row_factory = dict_row
                with pool.sync.connection() as conn:
                    return conn.autocommit, conn.execute("SELECT 1 AS one").fetchone()

            assert await asyncio.to_thread(sync_side) == (False, (1,))
        finally:
            await pool.stop()

    asyncio.run(inner())


def test_a_committed_block_is_visible_to_others(
    make_pool: PoolFactory, recorded: Recorded, table: str, postgres_dsn: str
) -> None:
    """Leaving the block normally commits, as psycopg_pool's connection() does."""
    pool = make_pool(min_size=1, max_size=1)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection() as conn:
                await conn.execute(f"INSERT INTO {table} (kind) VALUES ('a')")
        finally:
            await pool.stop()

    asyncio.run(inner())
    assert rows(postgres_dsn, table) == [("a",)]


def test_copy_through_a_checkout(
    make_pool: PoolFactory, recorded: Recorded, table: str, postgres_dsn: str
) -> None:
    """COPY FROM STDIN works through pool.connection() and gets one COPY span."""
    pool = make_pool(min_size=1, max_size=1)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            async with (
                pool.connection() as conn,
                conn.cursor() as cursor,
                cursor.copy(f"COPY {table} (kind) FROM STDIN") as copy,
            ):
                for kind in ("x", "y", "z"):
                    await copy.write_row([kind])
        finally:
            await pool.stop()

    asyncio.run(inner())
    assert rows(postgres_dsn, table) == [("x",), ("y",), ("z",)]
    (span,) = recorded.spans(f"COPY {table}")
    assert (span.attributes or {})["db.operation.name"] == "COPY"


def test_sync_twin_serves_threads_and_recovers(
    make_pool: PoolFactory, recorded: Recorded, admin: Admin, table: str, postgres_dsn: str
) -> None:
    """pool.sync opens on first use, serves many threads, survives terminated backends."""
    pool = make_pool(min_size=2, max_size=2)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            assert admin.count() == 2  # the async pool's; the twin is not open yet

            def work(i: int) -> None:
                with pool.sync.connection() as conn:
                    conn.execute(f"INSERT INTO {table} (kind) VALUES (%s)", [f"t{i}"])

            def threads() -> None:
                workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()

            await asyncio.to_thread(threads)
            assert pool.sync.stats().checkouts == 8
            admin.terminate()
            await admin.await_for(lambda states: states == [])
            await asyncio.to_thread(work, 99)
            assert pool.sync.stats().connections_lost >= 1
        finally:
            await pool.stop()
        await admin.await_for(lambda states: states == [])

    asyncio.run(inner())
    assert len(rows(postgres_dsn, table)) == 9


def test_sync_twin_exhaustion_raises_pool_exhausted(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """The sync twin maps PoolTimeout to PoolExhaustedError too, and counts it."""
    pool = make_pool(min_size=0, max_size=1, exhausted_status=503)

    async def inner() -> PoolExhaustedError:
        await pool.start(recorded.telemetry)
        try:

            def work() -> PoolExhaustedError:
                with (
                    pool.sync.connection(),
                    pytest.raises(PoolExhaustedError) as caught,
                    pool.sync.connection(timeout=0.1),
                ):
                    pass
                return caught.value

            return await asyncio.to_thread(work)
        finally:
            await pool.stop()

    error = asyncio.run(inner())
    assert (error.pool, error.reason, error.http_status) == ("main.sync", "timeout", 503)
    assert pool.sync.stats().timeouts == 1


def test_eager_start_against_a_dead_server_fails_clearly(
    refused_port: int, recorded: Recorded
) -> None:
    """Startup against a refused port raises an OtelperfError naming the server and the cause."""
    settings = config(
        conninfo=f"postgresql://someone@127.0.0.1:{refused_port}/db", min_size=1, timeout="1s"
    )
    pool = build_pool("main", settings)

    async def inner() -> None:
        started = time.perf_counter()
        with pytest.raises(OtelperfError) as caught:
            await pool.start(recorded.telemetry)
        assert time.perf_counter() - started < 5
        message = str(caught.value)
        assert f"postgresql://someone@127.0.0.1:{refused_port}/db" in message
        assert "OperationalError" in message
        assert "open: lazy" in message
        await pool.stop()

    asyncio.run(inner())


def test_lazy_pool_against_a_dead_server_reports_it_unavailable(
    refused_port: int, recorded: Recorded
) -> None:
    """A checkout that cannot connect raises PoolExhaustedError(reason='unavailable')."""
    settings = config(
        conninfo=f"postgresql://someone@127.0.0.1:{refused_port}/db",
        min_size=1,
        timeout="1s",
        open="lazy",
    )
    pool = build_pool("main", settings)

    async def inner() -> PoolExhaustedError:
        await pool.start(recorded.telemetry)
        try:
            with pytest.raises(PoolExhaustedError) as caught:
                async with pool.connection():
                    pass
            return caught.value
        finally:
            await pool.stop()

    error = asyncio.run(inner())
    assert error.reason == "unavailable"
    assert "the last attempt failed" in str(error)
    assert pool.stats().connection_errors >= 1
    assert recorded.value("otelperf.pool.connection.errors") >= 1


def test_readiness_is_select_1_and_fails_when_the_server_is_gone(
    make_pool: PoolFactory, recorded: Recorded, refused_port: int
) -> None:
    """The readiness check passes on a healthy pool and fails on an unreachable server."""
    pool = make_pool(min_size=1, max_size=1)
    dead = build_pool(
        "dead",
        config(
            conninfo=f"postgresql://x@127.0.0.1:{refused_port}/db", open="lazy", timeout="200ms"
        ),
    )

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        await dead.start(recorded.telemetry)
        try:
            check = pool.readiness_check()
            assert await check() is True
            with pytest.raises(PoolExhaustedError):
                await dead.readiness_check()()
        finally:
            await pool.stop()
            await dead.stop()

    asyncio.run(inner())
    assert recorded.spans() == []  # readiness queries make no spans


def test_readiness_passes_without_waiting_when_every_connection_is_busy(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """A saturated but working pool stays ready: readiness does not queue behind requests."""
    pool = make_pool(min_size=1, max_size=1, timeout="5s")

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
                started = time.perf_counter()
                assert await pool.readiness_check()() is True
                assert time.perf_counter() - started < 0.5
        finally:
            await pool.stop()

    asyncio.run(inner())


def test_ping_connects_outside_the_pool(
    make_pool: PoolFactory, refused_port: int, admin: Admin
) -> None:
    """ping() needs no start() and reports an unreachable server as an OtelperfError."""
    pool = make_pool()
    dead = build_pool("dead", config(conninfo=f"host=127.0.0.1 port={refused_port} user=x"))

    async def inner() -> None:
        await pool.ping()
        with pytest.raises(OtelperfError, match=f"pool 'dead': cannot reach .*:{refused_port}"):
            await dead.ping()

    asyncio.run(inner())
    admin.wait_for(lambda states: states == [])  # ping closed its connection


def test_settings_reach_the_session(make_pool: PoolFactory, recorded: Recorded) -> None:
    """settings become session parameters of every pooled connection (sync twin included)."""
    pool = make_pool(min_size=1, settings={"statement_timeout": "1500ms", "lock_timeout": 2000})

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT current_setting('statement_timeout')")
                assert await cur.fetchone() == ("1500ms",)
                cur = await conn.execute("SELECT current_setting('lock_timeout')")
                assert await cur.fetchone() == ("2s",)

            def sync() -> Any:
                with pool.sync.connection() as conn:
                    return conn.execute("SELECT current_setting('statement_timeout')").fetchone()

            assert await asyncio.to_thread(sync) == ("1500ms",)
            with pytest.raises(psycopg.errors.QueryCanceled):
                async with pool.connection() as conn:
                    await conn.execute("SELECT pg_sleep(3)")
        finally:
            await pool.stop()

    asyncio.run(inner())


def test_cancelled_checkout_wait_leaves_the_pool_consistent(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """A caller cancelled while waiting neither leaks a connection nor skews the counts."""
    pool = make_pool(min_size=1, max_size=1, timeout="5s")

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection():
                waiter = asyncio.ensure_future(pool.connection().__aenter__())
                await eventually(lambda: pool.stats().pending == 1)
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
            async with pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
            stats = pool.stats()
            assert (stats.used, stats.checkouts, stats.pending) == (0, 2, 0)
        finally:
            await pool.stop()

    asyncio.run(inner())


def test_the_pool_recovers_when_the_server_comes_back(
    proxy: TcpProxy, recorded: Recorded, app_name: str
) -> None:
    """Server gone: checkouts fail as 'unavailable'; server back: the same pool serves again."""
    pool = build_pool(
        "main",
        config(
            conninfo=f"postgresql://postgres@127.0.0.1:{proxy.port}/test",
            min_size=2,
            max_size=2,
            timeout="1s",
            settings={"application_name": app_name},
        ),
    )

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
            proxy.stop()  # the server goes away: connections cut, new ones refused
            with pytest.raises(PoolExhaustedError) as caught:
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")
            assert caught.value.reason == "unavailable"
            assert "the last attempt failed: OperationalError" in str(caught.value)
            proxy.start()  # back, on the same port
            started = time.perf_counter()
            async with pool.connection(timeout=15) as conn:
                assert await (await conn.execute("SELECT 2")).fetchone() == (2,)
            assert time.perf_counter() - started < 15
            stats = pool.stats()
            assert stats.connections_lost >= 1
            assert stats.connection_errors >= 1
            assert stats.last_connection_error is None  # a connection succeeded since
        finally:
            await pool.stop()

    asyncio.run(inner())
