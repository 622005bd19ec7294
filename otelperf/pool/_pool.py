"""``Pool``: a psycopg_pool pool built from config, measured per checkout.

The async pool (``AsyncConnectionPool``) is the primary one: it opens in the app's
lifespan startup (``open: eager``) or on first use (``open: lazy``). Sync code uses
``pool.sync`` (:mod:`otelperf.pool._sync`), a twin ``ConnectionPool`` with the same
settings that opens on its first sync checkout, so an async-only service never holds
connections it does not use.

A checkout (``async with pool.connection() as conn``) behaves as psycopg_pool's
``connection()`` (commit on success, rollback on error, a transaction left open is
rolled back before reuse) and adds: a dead-connection check that costs no round trip,
a reset of what a borrower changed (autocommit, row factory...), one ``wait_time``
and one ``use_time`` point, and :class:`PoolExhaustedError` instead of psycopg_pool's
``PoolTimeout``/``TooManyRequests``. The decisions live in :mod:`otelperf.pool._core`,
shared with the sync twin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

from otelperf._component import ComponentTelemetry
from otelperf._errors import OtelperfError
from otelperf.pool import _core, _metrics
from otelperf.pool._config import plan
from otelperf.pool._core import PoolStats
from otelperf.pool._metrics import PoolState
from otelperf.pool._sync import SyncPool
from otelperf.pool._tracing import QueryTelemetry

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from otelperf.config._schema import PoolConfig
    from otelperf.pool._config import PoolPlan
    from otelperf.pool._connection import ConnectionHooks

__all__ = ["Pool", "build_pool"]

READY_TIMEOUT = 2.0
"""Longest the readiness check waits for a connection (less if the pool's timeout is)."""


def build_pool(name: str, config: PoolConfig) -> Pool:
    """The pool ``name`` of the config, not yet open (no I/O).

    Raises :class:`~otelperf.OtelperfError` for a conninfo libpq cannot parse (without
    quoting it), and :class:`~otelperf.MissingDependencyError` without the ``postgres``
    extra.
    """
    return Pool(plan(name, config))


class Pool:
    """A PostgreSQL connection pool from the config, measured and traced.

    ::

        pool = perf.pool("main")
        async with pool.connection() as conn:
            await conn.execute("INSERT INTO events (kind) VALUES (%s)", ["signup"])

        with pool.sync.connection() as conn:  # from sync code (a thread)
            conn.execute("SELECT 1")

    Leaving the block commits, or rolls back if it raised; the connection goes back
    to the pool either way, reset if a transaction was left open. A checkout that
    finds no connection within ``timeout`` raises :class:`PoolExhaustedError`.
    """

    def __init__(self, plan: PoolPlan) -> None:
        self.name = plan.name
        self._plan = plan
        self._telemetry: ComponentTelemetry | None = None
        self._queries: QueryTelemetry | None = None
        self._state: PoolState | None = None
        self._hooks: ConnectionHooks | None = None
        self._pool: AsyncConnectionPool[Any] | None = None
        self._ready = False  # _pool is open: the checkout fast path
        self._stopped = False
        # From the psycopg-dependent module, set when the pool opens.
        self._needs_reset: Callable[[Any], bool] = _core.never
        self._areset: Callable[[Any], Awaitable[None]] = _core.anothing
        self._errors: tuple[type[Exception], ...] = ()
        self.sync = SyncPool(self)
        """The sync twin: ``with pool.sync.connection() as conn`` from sync code."""
        _core.install_log_filter(plan.redact)

    def __repr__(self) -> str:
        state = "open" if self._ready else ("stopped" if self._stopped else "not open")
        return f"<otelperf Pool {self.name!r} {self._plan.target.display} {state}>"

    # --- Component ---------------------------------------------------------------

    async def start(self, telemetry: ComponentTelemetry) -> None:
        """Bind telemetry; with ``open: eager``, open and wait for ``min_size`` connections.

        Raises :class:`~otelperf.OtelperfError` naming the server and the last
        connection error (password masked) when they are not ready within ``timeout``.
        """
        self.bind(telemetry)
        if self._plan.eager:
            await self._open(wait=True)

    def bind(self, telemetry: ComponentTelemetry) -> None:
        """Report through ``telemetry`` from now on (no I/O; ``start()`` calls it).

        For sync applications that start otelperf without an event loop: bind, then
        use ``pool.sync``.
        """
        self._stopped = False
        if self._telemetry is telemetry:
            return
        plan = self._plan
        meter = telemetry.meter
        queries = QueryTelemetry(
            telemetry.tracer, meter, plan.target, record_statements=plan.record_statements
        )
        state = _core.pool_state(plan.name, meter, plan)
        old_state, old_meter = self._state, self._telemetry.meter if self._telemetry else None
        if old_state is not None and old_meter is not None:
            _metrics.leave(old_meter, old_state)
            state.pool = old_state.pool
        self._telemetry, self._queries, self._state = telemetry, queries, state
        if self._hooks is not None:  # the connection classes already made keep these hooks
            self._hooks.state, self._hooks.queries = state, queries
        _metrics.join(meter, state)
        self.sync._bind(telemetry, queries)

    async def stop(self) -> None:
        """Close both twins: idle connections now, checked-out ones when returned."""
        self._stopped = True
        self._ready = False
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        await asyncio.to_thread(self.sync._close)
        if self._queries is not None:
            self._queries.flush()  # what the last queries left for the loop's next turn
        # The states stay joined to the meter: the final export still reports them.
        self._telemetry = None
        self._hooks = None

    def readiness_check(self) -> Callable[[], Awaitable[object]]:
        """``SELECT 1`` through the pool; a pool whose connections are all busy is ready."""
        return self._check_ready

    async def ping(self) -> None:
        """Open one connection outside the pool, run ``SELECT 1``, close it.

        For ``otelperf check --connect``: needs no telemetry and no started pool.
        Raises :class:`~otelperf.OtelperfError` naming the server (password masked).
        """
        from psycopg import AsyncConnection

        plan = self._plan
        limit = float(plan.connect_options["connect_timeout"]) + 1.0
        try:
            conn = await asyncio.wait_for(
                AsyncConnection.connect(plan.conninfo, autocommit=True, **plan.connect_options),
                limit,
            )
            try:
                await asyncio.wait_for(conn.execute("SELECT 1"), limit)
            finally:
                await conn.close()
        except asyncio.TimeoutError:
            raise OtelperfError(
                f"pool {self.name!r}: {plan.target.display} did not answer within {limit:g}s"
            ) from None
        except Exception as exc:
            reason = plan.redact(f"{type(exc).__name__}: {exc}".strip())
            raise OtelperfError(
                f"pool {self.name!r}: cannot reach {plan.target.display}: {reason}"
            ) from None

    # --- use -------------------------------------------------------------------------

    def connection(
        self, timeout: float | None = None
    ) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """Borrow a connection: ``async with pool.connection() as conn: ...``.

        ``timeout`` overrides the pool's checkout timeout for this call.
        """
        return _AsyncCheckout(self, self._plan.timeout if timeout is None else timeout)

    def stats(self) -> PoolStats:
        """A snapshot of the async pool (``pool.sync.stats()`` for the twin)."""
        return _core.stats(self._state, self.name, self._plan)

    # --- internals ------------------------------------------------------------------

    def _telemetry_failed(self, where: str) -> None:
        queries = self._queries
        if queries is not None:
            queries._failed(where)

    def _require_state(self) -> PoolState:
        if self._stopped:
            raise _core.closed_error(self.name)
        state = self._state
        if state is None:
            raise OtelperfError(
                f"pool {self.name!r} is not started: it opens in the app's lifespan "
                "(perf.wrap(app), perf.lifespan() or 'async with perf:')"
            )
        return state

    async def _open(self, *, wait: bool = False) -> AsyncConnectionPool[Any]:
        state = self._require_state()
        pool = self._pool
        if pool is None:
            from psycopg_pool import AsyncConnectionPool

            from otelperf.pool._connection import (
                ConnectionHooks,
                areset,
                async_classes,
                needs_reset,
            )

            self._needs_reset, self._areset = needs_reset, areset
            self._errors = _core.pool_errors()

            assert self._queries is not None  # set with _state
            if self._hooks is None:
                self._hooks = ConnectionHooks(state, self._queries, self._plan.redact)
            connection_class, cursor_class = async_classes(self._hooks)
            pool = AsyncConnectionPool(
                self._plan.conninfo,
                connection_class=connection_class,
                kwargs={**self._plan.connect_options, "cursor_factory": cursor_class},
                open=False,
                **self._plan.pool_options,
            )
            self._pool = pool
            state.pool = pool
        if wait:
            from psycopg_pool import PoolTimeout

            try:
                await pool.open(wait=True, timeout=self._plan.timeout)
            except PoolTimeout:
                self._pool = None  # psycopg_pool closed it; a later start() makes a new one
                state.pool = None
                last = state.last_connect_error or "no answer from the server yet"
                raise OtelperfError(
                    f"pool {self.name!r}: could not open {self._plan.pool_options['min_size']} "
                    f"connections to {self._plan.target.display} within "
                    f"{self._plan.timeout:g}s ({last}); check that the server is up and "
                    f"pools.{self.name}.conninfo, or use open: lazy"
                ) from None
        else:
            await pool.open()
        self._ready = True
        return pool

    async def _acquire(self, pool: AsyncConnectionPool[Any], timeout: float) -> Any:
        plan = self._plan
        state = self._state
        assert state is not None
        deadline = perf_counter() + timeout
        while True:
            try:
                conn = await pool.getconn(deadline - perf_counter())
            except Exception as exc:
                _core.refuse(plan, state, self.name, self._errors, exc, timeout)
            verdict = _core.verdict(conn, plan, perf_counter())
            if verdict == _core.USABLE:
                return conn
            if verdict == _core.ROUND_TRIP:
                try:
                    await asyncio.wait_for(
                        pool.check_connection(conn), max(deadline - perf_counter(), 0.001)
                    )
                except Exception:
                    pass
                except BaseException:  # cancelled: give the connection back, dead or not
                    await self._discard(pool, conn)
                    raise
                else:
                    return conn
            state.lost += 1
            await self._discard(pool, conn)

    @staticmethod
    async def _discard(pool: AsyncConnectionPool[Any], conn: Any) -> None:
        # A closed connection returned to psycopg_pool is dropped and replaced.
        try:
            await conn.close()
        finally:
            await pool.putconn(conn)

    async def _check_ready(self) -> bool:
        state = self._state
        pool = self._pool
        if (
            state is not None
            and pool is not None
            and self._ready
            and state.used > 0
            and state.last_connect_error is None
            and pool.get_stats().get("pool_available", 0) == 0
        ):
            return True  # busy, not broken: every connection is in use and working
        from psycopg import AsyncCursor

        timeout = min(self._plan.timeout, READY_TIMEOUT)
        async with self.connection(timeout) as conn, AsyncCursor(conn) as cursor:
            await cursor.execute("SELECT 1")  # a plain cursor: no query span
        return True


class _AsyncCheckout:
    """``async with pool.connection()``: one checkout, measured."""

    __slots__ = ("_conn", "_owner", "_pool", "_started", "_timeout")

    def __init__(self, owner: Pool, timeout: float) -> None:
        self._owner = owner
        self._timeout = timeout

    async def __aenter__(self) -> Any:
        owner = self._owner
        pool = owner._pool if owner._ready else await owner._open()
        assert pool is not None
        state = owner._state
        assert state is not None
        started = perf_counter()
        if owner._plan.check:
            conn = await owner._acquire(pool, self._timeout)
        else:  # no check: psycopg_pool's getconn is the whole checkout
            try:
                conn = await pool.getconn(self._timeout)
            except Exception as exc:
                _core.refuse(owner._plan, state, owner.name, owner._errors, exc, self._timeout)
        now = perf_counter()
        state.used += 1
        state.checkouts += 1
        self._pool, self._conn, self._started = pool, conn, now
        try:
            state.wait_time.record(now - started, state.attributes)
        except Exception:
            owner._telemetry_failed("wait_time")
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        owner = self._owner
        try:
            await conn.__aexit__(exc_type, exc, tb)  # commit, or roll back on error
            if owner._needs_reset(conn):  # a borrower changed autocommit, row_factory...
                await owner._areset(conn)
        finally:
            # Stamped before putconn, which may hand the connection straight to a waiter.
            now = conn._otelperf_idle_since = perf_counter()
            try:
                await self._pool.putconn(conn)
            finally:
                state = owner._state
                if state is not None:
                    state.used -= 1
                    try:
                        state.use_time.record(now - self._started, state.attributes)
                    except Exception:
                        owner._telemetry_failed("use_time")
