"""``pool.sync``: the sync twin of a :class:`~otelperf.pool.Pool`.

A psycopg_pool ``ConnectionPool`` with the same settings, opened on the first sync
checkout (so an async-only service never holds its connections) and closed with its
pool. Its metrics carry the pool's name with ``.sync`` appended, so that
``used / max`` stays a true saturation ratio for each set of connections. It mirrors
the async checkout line for line; the decisions come from :mod:`otelperf.pool._core`.
Counters are updated under the state's lock: many threads check out at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

from otelperf._component import ComponentTelemetry
from otelperf.pool import _core, _metrics
from otelperf.pool._core import PoolStats
from otelperf.pool._metrics import PoolState
from otelperf.pool._tracing import QueryTelemetry

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg_pool import ConnectionPool

    from otelperf.pool._connection import ConnectionHooks
    from otelperf.pool._pool import Pool

__all__ = ["SyncPool"]


class SyncPool:
    """The sync twin of a :class:`Pool`: a psycopg_pool ``ConnectionPool``, same settings.

    It opens on its first checkout and closes with its pool; its metrics carry the
    pool name with ``.sync`` appended.
    """

    def __init__(self, owner: Pool) -> None:
        self._owner = owner
        self.name = owner.name + _core.SYNC_SUFFIX
        self._lock = threading.Lock()
        self._telemetry: ComponentTelemetry | None = None
        self._queries: QueryTelemetry | None = None
        self._state: PoolState | None = None
        self._hooks: ConnectionHooks | None = None
        self._pool: ConnectionPool[Any] | None = None
        self._needs_reset: Callable[[Any], bool] = _core.never
        self._reset: Callable[[Any], None] = _core.nothing
        self._errors: tuple[type[Exception], ...] = ()

    def __repr__(self) -> str:
        state = "open" if self._pool is not None else "not open"
        return f"<otelperf SyncPool {self.name!r} {state}>"

    def connection(self, timeout: float | None = None) -> AbstractContextManager[Connection[Any]]:
        """Borrow a connection: ``with pool.sync.connection() as conn: ...``."""
        plan = self._owner._plan
        return _SyncCheckout(self, plan.timeout if timeout is None else timeout)

    def stats(self) -> PoolStats:
        """A snapshot of the sync twin."""
        return _core.stats(self._state, self.name, self._owner._plan)

    def _bind(self, telemetry: ComponentTelemetry, queries: QueryTelemetry) -> None:
        with self._lock:
            old = self._state
            if old is not None and self._telemetry is not None:
                state = _core.pool_state(self.name, telemetry.meter, self._owner._plan)
                _metrics.leave(self._telemetry.meter, old)
                state.pool = old.pool
                _metrics.join(telemetry.meter, state)
                self._state = state
                if self._hooks is not None:
                    self._hooks.state, self._hooks.queries = state, queries
            self._telemetry, self._queries = telemetry, queries

    def _open(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool is not None:
                return self._pool
            owner = self._owner
            owner._require_state()
            telemetry, queries = self._telemetry, self._queries
            assert telemetry is not None  # bound with the owner
            assert queries is not None
            from psycopg_pool import ConnectionPool

            from otelperf.pool._connection import ConnectionHooks, needs_reset, reset, sync_classes

            self._needs_reset, self._reset = needs_reset, reset
            self._errors = _core.pool_errors()

            plan = owner._plan
            state = _core.pool_state(self.name, telemetry.meter, plan)
            self._hooks = ConnectionHooks(state, queries, plan.redact)
            connection_class, cursor_class = sync_classes(self._hooks)
            pool = ConnectionPool(
                plan.conninfo,
                connection_class=connection_class,
                kwargs={**plan.connect_options, "cursor_factory": cursor_class},
                open=False,
                **{**plan.pool_options, "name": self.name},
            )
            pool.open()
            state.pool = pool
            self._state = state
            self._pool = pool
            _metrics.join(telemetry.meter, state)
            return pool

    def _close(self) -> None:
        with self._lock:  # the state stays, for stats() after shutdown
            pool, self._pool = self._pool, None
            self._telemetry = None
            self._hooks = None
        if pool is not None:
            pool.close()

    def _acquire(self, pool: ConnectionPool[Any], state: PoolState, timeout: float) -> Any:
        plan = self._owner._plan
        deadline = perf_counter() + timeout
        while True:
            try:
                conn = pool.getconn(deadline - perf_counter())
            except Exception as exc:
                _core.refuse(plan, state, self.name, self._errors, exc, timeout)
            if not plan.check:
                return conn
            verdict = _core.verdict(conn, plan, perf_counter())
            if verdict == _core.USABLE:
                return conn
            if verdict == _core.ROUND_TRIP:
                try:
                    pool.check_connection(conn)
                except Exception:
                    pass
                except BaseException:
                    self._discard(pool, conn)
                    raise
                else:
                    return conn
            with state.lock:
                state.lost += 1
            self._discard(pool, conn)

    @staticmethod
    def _discard(pool: ConnectionPool[Any], conn: Any) -> None:
        try:
            conn.close()
        finally:
            pool.putconn(conn)


class _SyncCheckout:
    """``with pool.sync.connection()``: one checkout, measured."""

    __slots__ = ("_conn", "_pool", "_started", "_state", "_timeout", "_twin")

    def __init__(self, twin: SyncPool, timeout: float) -> None:
        self._twin = twin
        self._timeout = timeout

    def __enter__(self) -> Any:
        twin = self._twin
        if twin._owner._stopped:
            raise _core.closed_error(twin.name)
        pool = twin._pool or twin._open()
        state = twin._state
        assert state is not None
        started = perf_counter()
        conn = twin._acquire(pool, state, self._timeout)
        now = perf_counter()
        with state.lock:
            state.used += 1
            state.checkouts += 1
        self._pool, self._state, self._conn, self._started = pool, state, conn, now
        try:
            state.wait_time.record(now - started, state.attributes)
        except Exception:
            twin._owner._telemetry_failed("wait_time")
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        state = self._state
        try:
            conn.__exit__(exc_type, exc, tb)  # commit, or roll back on error
            twin = self._twin
            if twin._needs_reset(conn):
                twin._reset(conn)
        finally:
            now = conn._otelperf_idle_since = perf_counter()
            try:
                self._pool.putconn(conn)
            finally:
                with state.lock:
                    state.used -= 1
                try:
                    state.use_time.record(now - self._started, state.attributes)
                except Exception:
                    self._twin._owner._telemetry_failed("use_time")
