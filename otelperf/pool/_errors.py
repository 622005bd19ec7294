"""The exception a caller sees when a pool cannot hand out a connection in time.

Kept free of psycopg imports so that the HTTP middleware (and any application code)
can catch it without the ``postgres`` extra installed.
"""

from __future__ import annotations

from typing import Literal

from otelperf._errors import OtelperfError

__all__ = ["ExhaustedReason", "PoolExhaustedError"]

ExhaustedReason = Literal["timeout", "queue_full", "unavailable"]


class PoolExhaustedError(OtelperfError):
    """No connection could be checked out of a pool in time.

    ``reason`` says why: ``timeout`` (every connection stayed in use for the whole
    checkout timeout), ``queue_full`` (``max_waiting`` callers were already queued,
    so this one failed at once) or ``unavailable`` (the server could not be reached).
    ``http_status`` is the pool's ``exhausted_status`` (e.g. 503) or None; otelperf's
    middleware answers a request that raised this error with that status. The
    psycopg_pool exception (``PoolTimeout`` or ``TooManyRequests``) is the
    ``__cause__``.

    >>> try:
    ...     raise PoolExhaustedError("main", "timeout", "no connection within 5s", 503)
    ... except PoolExhaustedError as exc:
    ...     (exc.pool, exc.reason, exc.http_status)
    ('main', 'timeout', 503)
    """

    def __init__(
        self, pool: str, reason: ExhaustedReason, message: str, http_status: int | None = None
    ) -> None:
        self.pool = pool
        self.reason: ExhaustedReason = reason
        self.http_status = http_status
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.pool, self.reason, str(self), self.http_status))


PoolExhaustedError.__module__ = "otelperf"
