"""From a ``batchers:`` config entry to a Batcher and its sink (no I/O: they open at start)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from otelperf.batch._batcher import Batcher
from otelperf.batch._errors import BatcherError
from otelperf.batch._retry import Backoff
from otelperf.batch._sinks import FunctionSink, JsonlFileSink, Sink

if TYPE_CHECKING:
    from otelperf.batch._postgres import ConnectionSource
    from otelperf.config._schema import BatcherConfig, SinkConfig

__all__ = ["build_batcher", "build_sink"]


def build_batcher(
    name: str,
    config: BatcherConfig,
    resolve_pool: Callable[[str], ConnectionSource] | None = None,
) -> Batcher:
    """The batcher a ``batchers:`` entry declares; no I/O (it opens in ``start``).

    ``resolve_pool(name)`` returns the pool a postgres sink writes through (any
    object whose ``connection()`` is an async context manager yielding a psycopg
    AsyncConnection); it is called at the batcher's start, not here.
    """
    retry = config.retry
    return Batcher(
        name,
        build_sink(name, config.sink, resolve_pool),
        max_size=config.max_size,
        max_wait=config.max_wait,
        max_queue=config.max_queue,
        on_full=config.on_full,
        block_timeout=config.block_timeout,
        concurrency=config.concurrency,
        retry=Backoff(
            attempts=retry.attempts,
            base=retry.backoff,
            max_delay=retry.max_backoff,
            jitter=retry.jitter,
        ),
        dead_letter=config.dead_letter.path if config.dead_letter is not None else None,
        shutdown_deadline=config.shutdown_deadline,
        write_timeout=config.write_timeout,
        max_links=config.max_links,
    )


def build_sink(
    batcher: str,
    config: SinkConfig,
    resolve_pool: Callable[[str], ConnectionSource] | None,
) -> Sink:
    """The sink a config section declares (no I/O: it opens at the batcher's start)."""
    if config.callable is not None:
        return FunctionSink(config.callable.path, batcher=batcher)
    if config.jsonl is not None:
        return JsonlFileSink(config.jsonl.path, batcher=batcher)
    if config.postgres is not None:
        if resolve_pool is None:
            raise BatcherError(
                f"batcher {batcher!r} writes to the pool {config.postgres.pool!r}, "
                "but no pools were given to build it from"
            )
        from otelperf.batch._postgres import LazyPool, PostgresCopySink

        postgres = config.postgres
        return PostgresCopySink(
            LazyPool(resolve_pool, postgres.pool),
            table=postgres.table,
            columns=postgres.columns,
            batcher=batcher,
            pool_name=postgres.pool,
        )
    raise BatcherError(f"batcher {batcher!r}: its sink declares no kind")  # pragma: no cover
