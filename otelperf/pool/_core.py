"""The I/O-free decisions both twins share: is a connection usable, which error to raise,
what a pool's stats are, and the log filter that keeps passwords out of psycopg's logs.
"""

from __future__ import annotations

import logging
import select
import threading
from dataclasses import dataclass
from typing import Any, NoReturn

from opentelemetry.metrics import Meter

from otelperf._errors import OtelperfError
from otelperf.pool._config import PoolPlan, Redactor
from otelperf.pool._errors import ExhaustedReason, PoolExhaustedError
from otelperf.pool._metrics import PoolState

__all__ = [
    "DEAD",
    "ROUND_TRIP",
    "SYNC_SUFFIX",
    "USABLE",
    "PoolStats",
    "anothing",
    "closed_error",
    "exhausted",
    "install_log_filter",
    "never",
    "nothing",
    "stats",
    "timeout_reason",
    "verdict",
]

SYNC_SUFFIX = ".sync"
"""Appended to a pool's name for its sync twin's metrics and errors."""

USABLE, DEAD, ROUND_TRIP = 0, 1, 2
"""What :func:`verdict` says about a connection just taken out of a pool."""


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of one pool (the async pool, or its sync twin)."""

    name: str
    """``db.client.connection.pool.name``: the pool's name, ``.sync`` added for the twin."""
    open: bool
    min_size: int
    max_size: int
    size: int
    """Connections open or being opened."""
    idle: int
    used: int
    """Connections checked out right now."""
    pending: int
    """Callers waiting for a connection."""
    checkouts: int
    timeouts: int
    rejected: int
    """Checkouts refused at once because ``max_waiting`` callers were already waiting."""
    connections_created: int
    connection_errors: int
    connections_lost: int
    """Connections found dead at checkout and replaced."""
    last_connection_error: str | None
    """The last failed connection attempt (password masked), None once one succeeds."""


# --- I/O-free decisions shared by both twins -----------------------------------------


def verdict(conn: Any, plan: PoolPlan, now: float) -> int:
    """Whether a connection just taken out of the pool can be handed to the caller.

    An idle connection's socket has nothing to read unless the server spoke first: a
    terminated backend or a restarted server sends its FATAL message and closes the
    socket. So a socket that polls readable gets a round trip (which fails fast on a
    dead connection, and costs little on a LISTENing one), and one that does not is
    handed out without any, for the price of one ``poll``. Connections idle longer
    than ``check_idle`` get the round trip anyway: a silently dropped TCP connection
    (a NAT or firewall timeout) looks quiet.
    """
    pgconn = conn.pgconn
    if pgconn.status != 0:  # ConnStatus.OK
        return DEAD
    try:
        if _readable(conn):
            return ROUND_TRIP
    except Exception:
        return DEAD
    if now - conn._otelperf_idle_since >= plan.check_idle:
        return ROUND_TRIP
    return USABLE


if hasattr(select, "poll"):

    def _readable(conn: Any) -> bool:
        poller = conn._otelperf_poller
        if poller is None:  # one per connection: its socket never changes
            poller = conn._otelperf_poller = select.poll()
            poller.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))

else:  # pragma: no cover - Windows has no poll(); its select() has no FD_SETSIZE limit

    def _readable(conn: Any) -> bool:
        return bool(select.select([conn.pgconn.socket], [], [], 0)[0])


def exhausted(
    plan: PoolPlan, state: PoolState, reason: ExhaustedReason, timeout: float
) -> PoolExhaustedError:
    name = state.name
    key = f"pools.{plan.name}"
    stats = state.measures()
    if reason == "queue_full":
        message = (
            f"pool {name!r} is exhausted: {stats.get('requests_waiting', 0)} callers are already "
            f"waiting for a connection ({key}.max_waiting = "
            f"{plan.pool_options['max_waiting']}), so this one failed at once; the database "
            f"or the pool is too slow for the load: raise {key}.max_size or shorten the work "
            "done while holding a connection"
        )
    elif reason == "unavailable":
        message = (
            f"pool {name!r} has no connection to {plan.target.display} after {timeout:g}s; "
            f"the last attempt failed: {state.last_connect_error}"
        )
    else:
        message = (
            f"pool {name!r} is exhausted: no connection was free within {timeout:g}s "
            f"({state.used} of {key}.max_size = {plan.pool_options['max_size']} in use, "
            f"{stats.get('requests_waiting', 0)} more waiting); raise {key}.max_size or "
            f"{key}.timeout, or hold connections for less time"
        )
    return PoolExhaustedError(name, reason, message, plan.exhausted_status)


def refuse(
    plan: PoolPlan,
    state: PoolState,
    name: str,
    errors: tuple[type[Exception], ...],
    exc: Exception,
    timeout: float,
) -> NoReturn:
    """Raise what a failed ``getconn`` means to the caller (counted), or ``exc`` itself.

    Called from the ``except`` block around ``getconn`` of either twin; ``errors`` is
    :func:`pool_errors`, ``name`` the twin's name for the closed-pool message.
    """
    too_many, pool_timeout, pool_closed = errors
    if isinstance(exc, too_many):
        with state.lock:
            state.rejected += 1
        raise exhausted(plan, state, "queue_full", timeout) from exc
    if isinstance(exc, pool_timeout):
        with state.lock:
            state.timeouts += 1
        raise exhausted(plan, state, timeout_reason(state), timeout) from exc
    if isinstance(exc, pool_closed):
        raise closed_error(name) from None
    raise exc


def pool_state(name: str, meter: Meter, plan: PoolPlan) -> PoolState:
    """A fresh state for a twin of the pool ``plan`` describes."""
    return PoolState(name, meter, plan.pool_options["min_size"], plan.pool_options["max_size"])


def timeout_reason(state: PoolState) -> ExhaustedReason:
    return "unavailable" if state.last_connect_error is not None else "timeout"


def closed_error(name: str) -> OtelperfError:
    return OtelperfError(
        f"pool {name!r} is closed: it was stopped with the app's lifespan; borrow connections "
        "between startup and shutdown"
    )


def stats(state: PoolState | None, name: str, plan: PoolPlan) -> PoolStats:
    if state is None:
        return PoolStats(
            name=name,
            open=False,
            min_size=plan.pool_options["min_size"],
            max_size=plan.pool_options["max_size"],
            size=0,
            idle=0,
            used=0,
            pending=0,
            checkouts=0,
            timeouts=0,
            rejected=0,
            connections_created=0,
            connection_errors=0,
            connections_lost=0,
            last_connection_error=None,
        )
    measures = state.measures()
    min_size, max_size = state.limits()
    return PoolStats(
        name=state.name,
        open=state.pool is not None and not state.pool.closed,
        min_size=min_size,
        max_size=max_size,
        size=measures.get("pool_size", 0),
        idle=measures.get("pool_available", 0),
        used=state.used,
        pending=measures.get("requests_waiting", 0),
        checkouts=state.checkouts,
        timeouts=state.timeouts,
        rejected=state.rejected,
        connections_created=state.created,
        connection_errors=state.connect_errors,
        connections_lost=state.lost,
        last_connection_error=state.last_connect_error,
    )


def never(conn: Any) -> bool:
    return False


def nothing(conn: Any) -> None:
    pass


async def anothing(conn: Any) -> None:
    pass


# --- the log filter --------------------------------------------------------------


class _LogRedactor(logging.Filter):
    """Masks passwords in psycopg's and psycopg_pool's log records (they log libpq errors)."""

    def __init__(self) -> None:
        super().__init__()
        self.redact = Redactor()

    def add(self, redact: Redactor) -> None:
        secrets = tuple(dict.fromkeys((*self.redact.secrets, *redact.secrets)))
        self.redact = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_LOG_FILTER = _LogRedactor()
_LOG_FILTER_LOCK = threading.Lock()
_LOG_FILTER_INSTALLED = False


def install_log_filter(redact: Redactor) -> None:
    global _LOG_FILTER_INSTALLED
    with _LOG_FILTER_LOCK:
        _LOG_FILTER.add(redact)
        if not _LOG_FILTER_INSTALLED:
            for name in ("psycopg", "psycopg.pool"):
                logging.getLogger(name).addFilter(_LOG_FILTER)
            _LOG_FILTER_INSTALLED = True


def pool_errors() -> tuple[type[Exception], type[Exception], type[Exception]]:
    """psycopg_pool's (TooManyRequests, PoolTimeout, PoolClosed), imported once a pool opens."""
    from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

    return TooManyRequests, PoolTimeout, PoolClosed
