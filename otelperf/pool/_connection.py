"""psycopg connection and cursor classes that report to a pool's telemetry.

Each pool gets its own subclasses (made by :func:`async_classes` / :func:`sync_classes`)
whose class attributes point at the pool's hooks, so a cursor finds its telemetry in
one attribute lookup. The connection class times ``connect()`` (one ``create_time``
point per connection) and remembers failures for the pool's error messages; the
cursor class wraps ``execute``, ``executemany``, ``stream`` and ``copy`` in a client
span and a ``db.client.operation.duration`` point.

Server-side cursors (``conn.cursor(name=...)``) are not instrumented.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Sized
from contextlib import aclosing, asynccontextmanager, closing, contextmanager
from time import perf_counter
from typing import Any, ClassVar, cast

from psycopg import AsyncConnection, AsyncCopy, AsyncCursor, Connection, Copy, Cursor
from psycopg.abc import Params, Query
from psycopg.rows import tuple_row

from otelperf.pool._config import Redactor
from otelperf.pool._metrics import PoolState
from otelperf.pool._tracing import QueryTelemetry

__all__ = ["ConnectionHooks", "areset", "async_classes", "needs_reset", "reset", "sync_classes"]


class ConnectionHooks:
    """Where a pool's connections report: its state, its query telemetry, its redactor.

    Mutable on purpose: when the pool is bound to new telemetry, the classes already
    handed to psycopg_pool keep pointing here and report to the new instruments.
    """

    def __init__(self, state: PoolState, queries: QueryTelemetry, redact: Redactor) -> None:
        self.state = state
        self.queries = queries
        self.redact = redact

    def connected(self, seconds: float) -> None:
        state = self.state
        with state.lock:  # the sync twin connects from worker threads
            state.created += 1
            state.last_connect_error = None
        try:
            state.create_time.record(seconds, state.attributes)
        except Exception:
            self.queries._failed("connect")

    def connect_failed(self, error: BaseException) -> None:
        state = self.state
        message = self.redact(f"{type(error).__name__}: {error}".strip())
        with state.lock:
            state.connect_errors += 1
            state.last_connect_error = message


def needs_reset(conn: AsyncConnection[Any] | Connection[Any]) -> bool:
    """Whether a borrower changed what the next one would inherit (autocommit, row factory...)."""
    return (
        conn.autocommit
        or conn.read_only is not None
        or conn.isolation_level is not None
        or conn.deferrable is not None
        or conn.row_factory is not tuple_row
    ) and not conn.closed


async def areset(conn: AsyncConnection[Any]) -> None:
    """Put back the pool's defaults (no round trip: the connection is idle)."""
    await conn.set_autocommit(False)
    await conn.set_read_only(None)
    await conn.set_isolation_level(None)
    await conn.set_deferrable(None)
    conn.row_factory = tuple_row


def reset(conn: Connection[Any]) -> None:
    """The sync twin of :func:`areset`."""
    conn.autocommit = False
    conn.read_only = None
    conn.isolation_level = None
    conn.deferrable = None
    conn.row_factory = tuple_row


def _batch_size(params_seq: Iterable[Params]) -> int | None:
    return len(params_seq) if isinstance(params_seq, Sized) else None


# --- async ----------------------------------------------------------------------


class _TracedAsyncCursor(AsyncCursor[Any]):
    _otelperf_hooks: ClassVar[ConnectionHooks]

    async def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> _TracedAsyncCursor:
        queries = self._otelperf_hooks.queries
        operation = queries.begin(query, self)
        try:
            await super().execute(cast(Any, query), params, prepare=prepare, binary=binary)
        except BaseException as exc:
            queries.fail(operation, exc)
            raise
        queries.end(operation)
        return self

    async def executemany(
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        queries = self._otelperf_hooks.queries
        operation = queries.begin_batch(query, _batch_size(params_seq), self)
        try:
            await super().executemany(query, params_seq, returning=returning)
        except BaseException as exc:
            queries.fail(operation, exc)
            raise
        queries.end(operation)

    async def stream(
        self, query: Query, params: Params | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        queries = self._otelperf_hooks.queries
        operation = queries.begin(query, self)
        try:
            rows_of = cast(AsyncGenerator[Any, None], super().stream(query, params, **kwargs))
            async with aclosing(rows_of) as rows:
                async for row in rows:
                    yield row
        except GeneratorExit:  # the caller stopped iterating early: not a failure
            queries.end(operation)
            raise
        except BaseException as exc:
            queries.fail(operation, exc)
            raise
        queries.end(operation)

    @asynccontextmanager
    async def copy(
        self, statement: Query, params: Params | None = None, **kwargs: Any
    ) -> AsyncIterator[AsyncCopy]:
        queries = self._otelperf_hooks.queries
        operation = queries.begin(statement, self)
        try:
            async with super().copy(statement, params, **kwargs) as copy:
                yield copy
        except BaseException as exc:
            queries.fail(operation, exc)
            raise
        queries.end(operation)


class _InstrumentedAsyncConnection(AsyncConnection[Any]):
    _otelperf_hooks: ClassVar[ConnectionHooks]
    _otelperf_idle_since: float = 0.0
    """perf_counter() when the connection was made or last returned to its pool."""
    _otelperf_poller: Any = None
    """The connection's socket registered in a select.poll(), made at its first check."""

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> _InstrumentedAsyncConnection:
        hooks = cls._otelperf_hooks
        started = perf_counter()
        try:
            conn = await super().connect(conninfo, **kwargs)
        except Exception as exc:
            hooks.connect_failed(exc)
            raise
        now = perf_counter()
        hooks.connected(now - started)
        conn._otelperf_idle_since = now
        return conn


def async_classes(
    hooks: ConnectionHooks,
) -> tuple[type[AsyncConnection[Any]], type[AsyncCursor[Any]]]:
    """A connection class and a cursor class reporting to ``hooks``, for one pool."""

    class PoolAsyncCursor(_TracedAsyncCursor):
        pass

    class PoolAsyncConnection(_InstrumentedAsyncConnection):
        pass

    PoolAsyncCursor._otelperf_hooks = hooks
    PoolAsyncConnection._otelperf_hooks = hooks
    return PoolAsyncConnection, PoolAsyncCursor


# --- sync (mirrors the async classes) -------------------------------------------


class _TracedCursor(Cursor[Any]):
    _otelperf_hooks: ClassVar[ConnectionHooks]

    def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> _TracedCursor:
        queries = self._otelperf_hooks.queries
        operation = queries.begin(query, self)
        try:
            super().execute(cast(Any, query), params, prepare=prepare, binary=binary)
        except BaseException as exc:
            queries.fail(operation, exc)
            raise
        queries.end(operation)
        return self

    def executemany(
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        queries = self._otelperf_hooks.queries
        operation = queries.begin_batch(query, _batch_size(params_seq), self)
        try:
            super().executemany(query, params_seq, returning=returning)
        except BaseException as exc:
            queries.fail(operation, exc)
            raise
        queries.end(operation)

    def stream(self, query: Query, params: Params | None = None, **kwargs: Any) -> Iterator[Any]:
        queries = self._otelperf_hooks.queries
        operation = queries.begin(query, self)
        try:
            rows_of = cast(Generator[Any, None, None], super().stream(query, params, **kwargs))
            with closing(rows_of) as rows:
                yield from rows
        except GeneratorExit:
            queries.end(operation)
            raise
        except BaseException as exc:
            queries.fail(operation, exc)
            raise
        queries.end(operation)

    @contextmanager
    def copy(self, statement: Query, params: Params | None = None, **kwargs: Any) -> Iterator[Copy]:
        queries = self._otelperf_hooks.queries
        operation = queries.begin(statement, self)
        try:
            with super().copy(statement, params, **kwargs) as copy:
                yield copy
        except BaseException as exc:
            queries.fail(operation, exc)
            raise
        queries.end(operation)


class _InstrumentedConnection(Connection[Any]):
    _otelperf_hooks: ClassVar[ConnectionHooks]
    _otelperf_idle_since: float = 0.0
    _otelperf_poller: Any = None

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> _InstrumentedConnection:
        hooks = cls._otelperf_hooks
        started = perf_counter()
        try:
            conn = super().connect(conninfo, **kwargs)
        except Exception as exc:
            hooks.connect_failed(exc)
            raise
        now = perf_counter()
        hooks.connected(now - started)
        conn._otelperf_idle_since = now
        return conn


def sync_classes(hooks: ConnectionHooks) -> tuple[type[Connection[Any]], type[Cursor[Any]]]:
    """The sync twins of :func:`async_classes`."""

    class PoolCursor(_TracedCursor):
        pass

    class PoolConnection(_InstrumentedConnection):
        pass

    PoolCursor._otelperf_hooks = hooks
    PoolConnection._otelperf_hooks = hooks
    return PoolConnection, PoolCursor
