"""The pool metrics against psycopg_pool's get_stats() and against what each test did."""

from __future__ import annotations

import asyncio
import time

import pytest

from otelperf._instruments import REGISTRY, SECONDS_BUCKETS
from otelperf.pool import PoolExhaustedError
from tests.pool.conftest import Admin, PoolFactory, Recorded, eventually

POOL = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
SEMCONV = (
    "db.client.connection.count",
    "db.client.connection.idle.max",
    "db.client.connection.idle.min",
    "db.client.connection.max",
    "db.client.connection.pending_requests",
    "db.client.connection.timeouts",
    "db.client.connection.create_time",
    "db.client.connection.wait_time",
    "db.client.connection.use_time",
)


def test_the_nine_semconv_metrics_are_declared_with_their_units() -> None:
    """The registry declares the nine pool metrics (units per semconv) and the duration."""
    units = {name: REGISTRY[name].unit for name in SEMCONV}
    assert units == {
        "db.client.connection.count": "{connection}",
        "db.client.connection.idle.max": "{connection}",
        "db.client.connection.idle.min": "{connection}",
        "db.client.connection.max": "{connection}",
        "db.client.connection.pending_requests": "{request}",
        "db.client.connection.timeouts": "{timeout}",
        "db.client.connection.create_time": "s",
        "db.client.connection.wait_time": "s",
        "db.client.connection.use_time": "s",
    }
    assert all(POOL in REGISTRY[name].attributes for name in SEMCONV)
    assert REGISTRY["db.client.operation.duration"].buckets == SECONDS_BUCKETS


def test_exactly_one_wait_and_use_point_per_checkout(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """N checkouts record exactly N wait_time and N use_time points."""
    pool = make_pool(min_size=1, max_size=3)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            for _ in range(7):
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")
            assert pool.stats().checkouts == 7
        finally:
            await pool.stop()

    asyncio.run(inner())
    assert recorded.value("db.client.connection.wait_time", **{POOL: "main"}).count == 7
    assert recorded.value("db.client.connection.use_time", **{POOL: "main"}).count == 7
    buckets = recorded.value("db.client.connection.wait_time").explicit_bounds
    assert tuple(buckets) == SECONDS_BUCKETS


def test_use_time_covers_the_work_done_with_the_connection(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """use_time is at least the pg_sleep run while the connection was held."""
    pool = make_pool(min_size=1, max_size=1)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_sleep(0.15)")
        finally:
            await pool.stop()

    asyncio.run(inner())
    point = recorded.value("db.client.connection.use_time", **{POOL: "main"})
    assert point.count == 1
    assert point.min >= 0.15
    assert point.max < 5


def test_wait_time_measures_the_wait_for_a_busy_pool(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """A checkout that waits for the only connection records that wait; the holder's is ~0."""
    pool = make_pool(min_size=1, max_size=1)

    async def inner() -> float:
        await pool.start(recorded.telemetry)
        try:
            holding = asyncio.Event()
            release = asyncio.Event()

            async def holder() -> None:
                async with pool.connection():
                    holding.set()
                    await release.wait()

            task = asyncio.ensure_future(holder())
            await holding.wait()
            started = time.perf_counter()
            checkout = pool.connection()
            waiter = asyncio.ensure_future(checkout.__aenter__())
            await eventually(lambda: pool.stats().pending == 1)
            await asyncio.sleep(0.1)
            release.set()
            await waiter
            waited = time.perf_counter() - started
            await checkout.__aexit__(None, None, None)
            await task
            return waited
        finally:
            await pool.stop()

    waited = asyncio.run(inner())
    point = recorded.value("db.client.connection.wait_time", **{POOL: "main"})
    assert point.count == 2
    assert point.max >= 0.1
    assert point.max <= waited
    assert point.min < 0.05


def test_counts_limits_and_pending_match_get_stats(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """count{idle,used}, idle.min/max, max and pending_requests equal get_stats() and the test."""
    pool = make_pool(min_size=2, max_size=3, timeout="5s")

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            raw = pool._pool
            assert raw is not None
            release = asyncio.Event()
            held = 0

            async def hold() -> None:
                nonlocal held
                async with pool.connection():
                    held += 1
                    await release.wait()

            tasks = [asyncio.ensure_future(hold()) for _ in range(5)]  # 3 get one, 2 wait
            await eventually(lambda: held == 3 and raw.get_stats()["requests_waiting"] == 2)
            stats = raw.get_stats()
            assert recorded.value("db.client.connection.count", **{STATE: "used"}) == 3
            assert (
                recorded.value("db.client.connection.count", **{STATE: "idle"})
                == stats["pool_available"]
                == 0
            )
            assert recorded.value("db.client.connection.pending_requests") == 2
            assert recorded.value("db.client.connection.max") == stats["pool_max"] == 3
            assert recorded.value("db.client.connection.idle.max") == 3
            assert recorded.value("db.client.connection.idle.min") == stats["pool_min"] == 2
            assert pool.stats().used == 3
            assert pool.stats().pending == 2
            release.set()
            await asyncio.gather(*tasks)
            stats = raw.get_stats()
            assert recorded.value("db.client.connection.count", **{STATE: "used"}) == 0
            assert (
                recorded.value("db.client.connection.count", **{STATE: "idle"})
                == stats["pool_available"]
                == stats["pool_size"]
                == 3
            )
            assert recorded.value("db.client.connection.pending_requests") == 0
        finally:
            await pool.stop()

    asyncio.run(inner())
    # A stopped pool still reports (the final export at shutdown comes after it closed).
    assert recorded.value("db.client.connection.count", **{STATE: "used"}) == 0
    assert recorded.value("db.client.connection.count", **{STATE: "idle"}) == 0


def test_create_time_has_one_point_per_connection_made(
    make_pool: PoolFactory, recorded: Recorded, admin: Admin
) -> None:
    """create_time counts exactly the connections psycopg_pool made (get_stats connections_num)."""
    pool = make_pool(min_size=2, max_size=4)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:
            release = asyncio.Event()
            ready = 0

            async def hold() -> None:
                nonlocal ready
                async with pool.connection():
                    ready += 1
                    await release.wait()

            tasks = [asyncio.ensure_future(hold()) for _ in range(4)]
            await eventually(lambda: ready == 4)
            release.set()
            await asyncio.gather(*tasks)
            assert pool._pool is not None
            stats = pool._pool.get_stats()
            made = stats["connections_num"] - stats.get("connections_errors", 0)
            assert made == 4
            point = recorded.value("db.client.connection.create_time", **{POOL: "main"})
            assert point.count == made == pool.stats().connections_created
            assert point.min > 0
            assert admin.count() == 4
        finally:
            await pool.stop()

    asyncio.run(inner())


@pytest.mark.parametrize("check", [True, False], ids=["checkout check", "no check"])
def test_exhaustion_with_max_size_2_raises_and_counts_timeouts(
    make_pool: PoolFactory, recorded: Recorded, check: bool
) -> None:
    """With both connections held, a checkout times out: PoolExhaustedError, timeouts == 1."""
    pool = make_pool(min_size=0, max_size=2, timeout="5s", exhausted_status=503, check=check)

    async def inner() -> PoolExhaustedError:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection() as a, pool.connection() as b:
                await a.execute("SELECT 1")
                await b.execute("SELECT 1")
                started = time.perf_counter()
                with pytest.raises(PoolExhaustedError) as caught:
                    async with pool.connection(timeout=0.2):
                        pass
                assert 0.2 <= time.perf_counter() - started < 2
            # Both came back: the pool serves again.
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
            return caught.value
        finally:
            await pool.stop()

    error = asyncio.run(inner())
    assert error.reason == "timeout"
    assert type(error.__cause__).__name__ == "PoolTimeout"
    assert error.http_status == 503
    assert error.pool == "main"
    assert "max_size = 2" in str(error)
    assert "2 of" in str(error)
    assert type(error).__module__ == "otelperf"
    assert recorded.value("db.client.connection.timeouts", **{POOL: "main"}) == 1
    assert pool.stats().timeouts == 1
    # The failed checkout recorded no wait point: 3 successful checkouts, 3 points.
    assert recorded.value("db.client.connection.wait_time").count == 3


@pytest.mark.parametrize("check", [True, False], ids=["checkout check", "no check"])
def test_a_full_queue_fails_at_once_and_is_counted_as_rejected(
    make_pool: PoolFactory, recorded: Recorded, check: bool
) -> None:
    """With max_waiting callers queued, the next checkout fails at once (queue_full)."""
    pool = make_pool(min_size=0, max_size=2, max_waiting=1, timeout="5s", check=check)

    async def inner() -> PoolExhaustedError:
        await pool.start(recorded.telemetry)
        try:
            async with pool.connection(), pool.connection():
                checkout = pool.connection(timeout=3)
                queued = asyncio.ensure_future(checkout.__aenter__())
                await eventually(lambda: pool.stats().pending == 1)
                started = time.perf_counter()
                with pytest.raises(PoolExhaustedError) as caught:
                    async with pool.connection():
                        pass
                assert time.perf_counter() - started < 0.5
            await queued  # served once the two came back
            await checkout.__aexit__(None, None, None)
            return caught.value
        finally:
            await pool.stop()

    error = asyncio.run(inner())
    assert error.reason == "queue_full"
    assert "max_waiting" in str(error)
    assert recorded.value("otelperf.pool.rejected", **{POOL: "main"}) == 1
    assert recorded.value("db.client.connection.timeouts", **{POOL: "main"}) == 0


def test_sync_twin_reports_under_its_own_pool_name(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """The sync twin's checkouts count under 'main.sync', the async pool's under 'main'."""
    pool = make_pool(min_size=1, max_size=2)

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        try:

            def work() -> None:
                for _ in range(3):
                    with pool.sync.connection() as conn:
                        conn.execute("SELECT 1")

            await asyncio.to_thread(work)
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
            assert recorded.value("db.client.connection.max", **{POOL: "main.sync"}) == 2
            sync_pool = pool.sync._pool
            assert sync_pool is not None
            assert (
                recorded.value("db.client.connection.count", **{POOL: "main.sync", STATE: "idle"})
                == sync_pool.get_stats()["pool_available"]
            )
        finally:
            await pool.stop()

    asyncio.run(inner())
    assert recorded.value("db.client.connection.wait_time", **{POOL: "main.sync"}).count == 3
    assert recorded.value("db.client.connection.wait_time", **{POOL: "main"}).count == 1
    assert pool.sync.stats().checkouts == 3


def test_two_pools_on_one_meter_both_report(make_pool: PoolFactory, recorded: Recorded) -> None:
    """Observable instruments are shared per meter: a second pool's gauges are not lost."""
    first = make_pool("first", min_size=1, max_size=2)
    second = make_pool("second", min_size=1, max_size=5)

    async def inner() -> None:
        await first.start(recorded.telemetry)
        await second.start(recorded.telemetry)
        try:
            assert recorded.value("db.client.connection.max", **{POOL: "first"}) == 2
            assert recorded.value("db.client.connection.max", **{POOL: "second"}) == 5
        finally:
            await first.stop()
            await second.stop()

    asyncio.run(inner())


def test_a_stopped_pool_keeps_its_counts_until_rebuilt(
    make_pool: PoolFactory, recorded: Recorded
) -> None:
    """After stop the final counts are still exported; a rebuilt pool of that name replaces them."""
    old = make_pool(min_size=0, max_size=1)
    new = make_pool(min_size=0, max_size=4)

    async def inner() -> None:
        await old.start(recorded.telemetry)
        async with old.connection():
            with pytest.raises(PoolExhaustedError):
                async with old.connection(timeout=0.05):
                    pass
        await old.stop()
        assert recorded.value("db.client.connection.timeouts", **{POOL: "main"}) == 1
        await new.start(recorded.telemetry)
        try:
            assert recorded.value("db.client.connection.max", **{POOL: "main"}) == 4
            assert recorded.value("db.client.connection.timeouts", **{POOL: "main"}) == 0
        finally:
            await new.stop()

    asyncio.run(inner())
