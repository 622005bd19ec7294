"""The pool metrics: the semconv ``db.client.connection.*`` set plus a few otelperf ones.

Histograms (``create_time``, ``wait_time``, ``use_time``) get one point per connection
made and per checkout, measured where it happens. Counts and limits are plain
integers kept by :class:`PoolState` (or read from the psycopg pool's ``get_stats()``)
and reported by observable instruments at collection time, so the checkout path
pays for two histogram points and nothing else.

The SDK keeps the callbacks of an observable instrument's first creation and hands
that instrument back when it is created again, so the observable instruments are
created once per meter and report for every pool joined to it. A pool stays joined
after it stops, so the last export (at shutdown, after the pools closed) still
carries its final counts; a pool started again under the same name replaces it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.semconv.attributes.db_attributes import (
    DB_NAMESPACE,
    DB_OPERATION_NAME,
    DB_RESPONSE_STATUS_CODE,
    DB_SYSTEM_NAME,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT

from otelperf import _instruments
from otelperf._instruments import SECONDS_BUCKETS, InstrumentSpec

__all__ = ["POOL_NAME", "STATE", "MeterPools", "PoolState", "join", "leave"]

_log = logging.getLogger("otelperf.pool")

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"

COUNT = "db.client.connection.count"
IDLE_MAX = "db.client.connection.idle.max"
IDLE_MIN = "db.client.connection.idle.min"
MAX = "db.client.connection.max"
PENDING = "db.client.connection.pending_requests"
TIMEOUTS = "db.client.connection.timeouts"
CREATE_TIME = "db.client.connection.create_time"
WAIT_TIME = "db.client.connection.wait_time"
USE_TIME = "db.client.connection.use_time"
OPERATION_DURATION = "db.client.operation.duration"
REJECTED = "otelperf.pool.rejected"
CONNECT_ERRORS = "otelperf.pool.connection.errors"
LOST = "otelperf.pool.connection.lost"

_POOL = (POOL_NAME,)

_instruments.register(
    InstrumentSpec(
        COUNT,
        "observable_up_down_counter",
        "{connection}",
        "Connections of a pool, by `db.client.connection.state` (idle or used).",
        (POOL_NAME, STATE),
        "pool",
    ),
    InstrumentSpec(
        IDLE_MAX,
        "observable_up_down_counter",
        "{connection}",
        "Most idle connections a pool keeps (its max_size: all may be idle).",
        _POOL,
        "pool",
    ),
    InstrumentSpec(
        IDLE_MIN,
        "observable_up_down_counter",
        "{connection}",
        "Fewest idle connections a pool keeps open (its min_size).",
        _POOL,
        "pool",
    ),
    InstrumentSpec(
        MAX,
        "observable_up_down_counter",
        "{connection}",
        "Most connections a pool opens at once (its max_size).",
        _POOL,
        "pool",
    ),
    InstrumentSpec(
        PENDING,
        "observable_up_down_counter",
        "{request}",
        "Callers waiting for a connection of a pool.",
        _POOL,
        "pool",
    ),
    InstrumentSpec(
        TIMEOUTS,
        "observable_counter",
        "{timeout}",
        "Checkouts that gave up after waiting the pool's timeout.",
        _POOL,
        "pool",
    ),
    InstrumentSpec(
        CREATE_TIME,
        "histogram",
        "s",
        "Time to open one new connection (one point per connection made).",
        _POOL,
        "pool",
        SECONDS_BUCKETS,
    ),
    InstrumentSpec(
        WAIT_TIME,
        "histogram",
        "s",
        "Time a checkout waited for a usable connection (one point per checkout).",
        _POOL,
        "pool",
        SECONDS_BUCKETS,
    ),
    InstrumentSpec(
        USE_TIME,
        "histogram",
        "s",
        "Time between a checkout and the connection's return (one point per checkout).",
        _POOL,
        "pool",
        SECONDS_BUCKETS,
    ),
    InstrumentSpec(
        OPERATION_DURATION,
        "histogram",
        "s",
        "Duration of database client operations (one point per execute, executemany, "
        "stream or COPY).",
        (
            DB_SYSTEM_NAME,
            DB_NAMESPACE,
            DB_OPERATION_NAME,
            DB_RESPONSE_STATUS_CODE,
            ERROR_TYPE,
            SERVER_ADDRESS,
            SERVER_PORT,
        ),
        "pool",
        SECONDS_BUCKETS,
    ),
    InstrumentSpec(
        REJECTED,
        "observable_counter",
        "{request}",
        "Checkouts refused at once because `max_waiting` callers were already waiting.",
        _POOL,
        "pool",
    ),
    InstrumentSpec(
        CONNECT_ERRORS,
        "observable_counter",
        "{connection}",
        "Connection attempts of a pool that failed (server down, refused, bad credentials).",
        _POOL,
        "pool",
    ),
    InstrumentSpec(
        LOST,
        "observable_counter",
        "{connection}",
        "Pooled connections found dead at checkout (server restarted, backend terminated) "
        "and replaced.",
        _POOL,
        "pool",
    ),
)


class PoolState:
    """Counters of one psycopg pool (the async pool, or its sync twin) and its histograms.

    The async pool updates the counters from its event loop only; the sync twin from
    many threads, under :attr:`lock`. Collection threads only read them.
    """

    def __init__(self, name: str, meter: Meter, min_size: int, max_size: int) -> None:
        self.name = name
        self._limits = (min_size, max_size)
        self.attributes: dict[str, Any] = {POOL_NAME: name}
        self.idle_attributes: dict[str, Any] = {POOL_NAME: name, STATE: "idle"}
        self.used_attributes: dict[str, Any] = {POOL_NAME: name, STATE: "used"}
        self.lock = threading.Lock()
        self.wait_time = _instruments.create(meter, WAIT_TIME)
        self.use_time = _instruments.create(meter, USE_TIME)
        self.create_time = _instruments.create(meter, CREATE_TIME)
        self.pool: Any = None
        """The psycopg pool once it exists (its ``get_stats()`` feeds idle and pending)."""
        self.used = 0
        self.checkouts = 0
        self.timeouts = 0
        self.rejected = 0
        self.created = 0
        self.connect_errors = 0
        self.lost = 0
        self.last_connect_error: str | None = None
        """Redacted message of the last failed connection attempt, None once one succeeds."""

    def measures(self) -> dict[str, int]:
        """``get_stats()`` of the psycopg pool (min, max, size, available, waiting)."""
        pool = self.pool
        if pool is None:
            return {}
        stats: dict[str, int] = pool.get_stats()
        return stats

    def limits(self) -> tuple[int, int]:
        """(min_size, max_size)."""
        pool = self.pool
        if pool is None:
            return self._limits
        return (int(pool.min_size), int(pool.max_size))


class MeterPools:
    """The observable pool instruments of one meter and the pools reporting through them."""

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        self._states: tuple[PoolState, ...] = ()  # replaced, never mutated
        self._failed: set[str] = set()
        observe: dict[str, Callable[[PoolState], Iterable[Observation]]] = {
            COUNT: self._count,
            IDLE_MAX: lambda s: [Observation(s.limits()[1], s.attributes)],
            IDLE_MIN: lambda s: [Observation(s.limits()[0], s.attributes)],
            MAX: lambda s: [Observation(s.limits()[1], s.attributes)],
            PENDING: lambda s: [Observation(s.measures().get("requests_waiting", 0), s.attributes)],
            TIMEOUTS: lambda s: [Observation(s.timeouts, s.attributes)],
            REJECTED: lambda s: [Observation(s.rejected, s.attributes)],
            CONNECT_ERRORS: lambda s: [Observation(s.connect_errors, s.attributes)],
            LOST: lambda s: [Observation(s.lost, s.attributes)],
        }
        for name, read in observe.items():
            _instruments.create(meter, name, [self._callback(name, read)])

    @staticmethod
    def _count(state: PoolState) -> Iterable[Observation]:
        idle = state.measures().get("pool_available", 0)
        return [
            Observation(idle, state.idle_attributes),
            Observation(state.used, state.used_attributes),
        ]

    def _callback(
        self, name: str, read: Callable[[PoolState], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            out: list[Observation] = []
            for state in self._states:
                try:
                    out.extend(read(state))
                except Exception:  # never raise into the SDK; say it once
                    key = f"{name}/{state.name}"
                    if key not in self._failed:
                        self._failed.add(key)
                        _log.warning("cannot read %s of pool %r", name, state.name, exc_info=True)
            return out

        return callback

    def join(self, state: PoolState) -> None:
        # A pool rebuilt under the same name (a restarted Perf) replaces its predecessor.
        with self._lock:
            self._states = (*(s for s in self._states if s.name != state.name), state)

    def leave(self, state: PoolState) -> None:
        with self._lock:
            self._states = tuple(s for s in self._states if s is not state)


_BY_METER: weakref.WeakKeyDictionary[Meter, MeterPools] = weakref.WeakKeyDictionary()
_BY_METER_LOCK = threading.Lock()


def join(meter: Meter, state: PoolState) -> None:
    """Report ``state`` through ``meter``'s observable pool instruments from now on."""
    with _BY_METER_LOCK:
        pools = _BY_METER.get(meter)
        if pools is None:
            pools = _BY_METER[meter] = MeterPools(meter)
    pools.join(state)


def leave(meter: Meter, state: PoolState) -> None:
    """Stop reporting ``state`` through ``meter`` (its pool moved to another meter).

    A stopped pool stays joined: the final export at shutdown, which runs after the
    pools closed, still carries its counters.
    """
    with _BY_METER_LOCK:
        pools = _BY_METER.get(meter)
    if pools is not None:
        pools.leave(state)
