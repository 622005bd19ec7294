"""The PostgreSQL sink: each batch is one ``COPY ... FROM STDIN`` in its own transaction.

It borrows connections from a pool it is given: any object whose ``connection()``
is an async context manager yielding a psycopg ``AsyncConnection`` (a
``psycopg_pool.AsyncConnectionPool``, or the pool otelperf builds from ``pools:``).

Items are tuples or lists in the order of ``columns``, or mappings keyed by column
name. A constraint violation or a value PostgreSQL refuses is the data's fault
(``is_item_error``): the batcher splits the batch until the poison row is alone.
Anything else (connection lost, table renamed away, lock timeout) is the sink's:
the whole batch is retried.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from otelperf._errors import MissingDependencyError
from otelperf._redact import redact_text
from otelperf.batch._errors import BatcherError
from otelperf.batch._sinks import default_is_item_error

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["ConnectionSource", "LazyPool", "PostgresCopySink"]

_log = logging.getLogger("otelperf.batch")


class ConnectionSource(Protocol):
    """A pool: ``async with pool.connection() as conn`` yields a psycopg AsyncConnection."""

    def connection(self) -> AbstractAsyncContextManager[Any]: ...


class LazyPool:
    """A pool looked up by name on first use (the batcher is built before pools start)."""

    def __init__(self, resolve: Callable[[str], ConnectionSource], name: str) -> None:
        self.name = name
        self._resolve = resolve
        self._pool: ConnectionSource | None = None

    def pool(self) -> ConnectionSource:
        if self._pool is None:
            self._pool = self._resolve(self.name)
        return self._pool

    def connection(self) -> AbstractAsyncContextManager[Any]:
        return self.pool().connection()


class PostgresCopySink:
    """COPYs each batch into ``table`` (``columns`` in order), one transaction per batch::

        pool = psycopg_pool.AsyncConnectionPool(dsn, open=False)
        sink = PostgresCopySink(pool, table="events", columns=["ts", "kind", "payload"])
        batcher = Batcher("events", sink, max_size=500, max_wait=2.0)

    ``table`` may be schema-qualified (``audit.events``); names are quoted as given.
    """

    kind = "postgres"

    def __init__(
        self,
        pool: ConnectionSource,
        *,
        table: str,
        columns: Sequence[str],
        batcher: str = "",
        pool_name: str | None = None,
    ) -> None:
        try:
            from psycopg import sql
        except ImportError:
            raise MissingDependencyError(
                "psycopg", "postgres", f"the postgres sink of batcher {batcher!r}"
            ) from None
        if not columns:
            raise BatcherError(f"batcher {batcher!r}: the postgres sink needs at least one column")
        self.pool = pool
        self.table = table
        self.columns = tuple(columns)
        self.batcher = batcher
        self.pool_name = pool_name
        self._width = len(self.columns)
        self._table_sql = sql.Identifier(*table.split("."))
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
            self._table_sql, sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        )

    def __repr__(self) -> str:
        return f"<PostgresCopySink {self.table!r} ({', '.join(self.columns)})>"

    def _where(self, key: str) -> str:
        return f"batchers.{self.batcher}.sink.postgres.{key}" if self.batcher else key

    def _row(self, item: Any) -> Sequence[Any]:
        if isinstance(item, Mapping):
            return tuple([item[column] for column in self.columns])
        if isinstance(item, (tuple, list)):
            if len(item) != self._width:
                raise ValueError(
                    f"an item has {len(item)} values for the {self._width} columns "
                    f"({', '.join(self.columns)}) of {self.table!r}"
                )
            return item
        raise TypeError(
            f"the postgres sink of {self.table!r} takes tuples, lists or mappings, "
            f"not {type(item).__name__}"
        )

    async def write(self, items: list[Any]) -> None:
        async with self.pool.connection() as conn:
            try:
                async with conn.cursor() as cur, cur.copy(self._copy) as copy:
                    write_row = copy.write_row
                    for item in items:
                        # A tuple of the wrong width is refused by the server (a data error,
                        # so it is isolated like any poison row); checking here costs more.
                        await write_row(item if type(item) is tuple else self._row(item))
                # One transaction per batch, committed here rather than left to the pool:
                # a pool whose connection() does not commit must not lose the batch.
                await conn.commit()
            except BaseException:
                # Leave the connection clean for the pool whatever its policy; a failure
                # here (the connection is broken) is the pool's to handle.
                with contextlib.suppress(Exception):
                    await conn.rollback()
                raise

    def is_item_error(self, error: BaseException) -> bool:
        """True for constraint violations and values PostgreSQL (or psycopg) refuses."""
        import psycopg

        if isinstance(error, (psycopg.DataError, psycopg.IntegrityError)):
            return True
        if isinstance(error, psycopg.ProgrammingError) and error.sqlstate is None:
            return True  # raised by psycopg itself while adapting a value ("cannot adapt")
        if isinstance(error, psycopg.Error):
            return False
        return default_is_item_error(error)

    async def open(self) -> None:
        """Check that the table and its columns exist; a database not reachable yet only warns."""
        try:
            await self._check()
        except BatcherError:
            raise
        except Exception as exc:
            _log.warning(
                "batcher %r: could not check table %r at startup (%s); "
                "batches will be retried until the database answers",
                self.batcher, self.table, redact_text(f"{type(exc).__name__}: {exc}"),
            )  # fmt: skip

    async def ping(self) -> None:
        """Reach the database and check the table; a BatcherError says what is wrong."""
        try:
            await self._check()
        except BatcherError:
            raise
        except Exception as exc:
            raise BatcherError(
                f"batcher {self.batcher!r}: cannot reach PostgreSQL through pool "
                f"{self.pool_name!r}: {redact_text(f'{type(exc).__name__}: {exc}')}"
            ) from None

    async def _check(self) -> None:
        async with self.pool.connection() as conn:
            found = await self._columns(conn)
        if found is None:
            raise BatcherError(
                f"batcher {self.batcher!r}: table {self.table!r} does not exist in the database "
                f"of pool {self.pool_name!r}; create it, or fix {self._where('table')}"
            )
        missing = [c for c in self.columns if c not in found]
        if missing:
            raise BatcherError(
                f"batcher {self.batcher!r}: table {self.table!r} has no column "
                f"{', '.join(map(repr, missing))}; its columns are {', '.join(found)}; "
                f"fix {self._where('columns')}"
            )

    async def _columns(self, conn: AsyncConnection[Any]) -> list[str] | None:
        # From the catalog, not a probing COPY: that would fire statement triggers.
        qualified = self._table_sql.as_string(conn)
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute("SELECT to_regclass(%s)::oid", (qualified,))
            row = await cur.fetchone()
            if row is None or row[0] is None:
                return None
            await cur.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum",
                (row[0],),
            )
            return [str(r[0]) for r in await cur.fetchall()]
