"""Stampede protection: single flight (per process), and the XFetch early-recompute rule.

The fleet-wide ``lock`` strategy is a Redis lock taken by the single-flight leader of
each process (see ``_cache.py``), so the two compose: 100 concurrent misses in one
process make one lock attempt, and one process in the fleet calls the origin.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["SingleFlight", "SyncSingleFlight", "xfetch_due"]


def xfetch_due(now: float, expires_at: float, delta: float, beta: float) -> bool:
    """Whether to recompute a still-fresh value now (Vattani, Chierichetti, Lowenstein 2015).

    ``delta`` is what computing the value took; each reader recomputes early with a
    probability that rises as expiry nears, so one of them usually refreshes the
    value before it expires and the others never see a miss.
    """
    if delta <= 0.0:
        return False
    # 1 - random() lies in (0, 1]: log is defined and <= 0.
    return now - delta * beta * math.log(1.0 - random.random()) >= expires_at


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Every awaiting caller may be gone (cancelled): fetch the outcome so asyncio
    # does not log "exception was never retrieved" for an origin error.
    if not task.cancelled():
        task.exception()


class SingleFlight:
    """Concurrent calls for one key in one event loop share one computation.

    The computation runs in its own task: the caller that started it being
    cancelled (a client that went away) does not cancel it for the others.
    """

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[Any]] = {}

    async def run(self, key: str, compute: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """The result of ``compute`` for ``key``, and whether this caller joined a flight."""
        task = self._flights.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.ensure_future(compute())
            self._flights[key] = task
            task.add_done_callback(_retrieve)
            task.add_done_callback(functools.partial(self._land, key))
        return await asyncio.shield(task), joined

    def _land(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]

    async def drain(self) -> None:
        """Wait for every flight in progress (shutdown)."""
        tasks = list(self._flights.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class _Call:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SyncSingleFlight:
    """Concurrent calls for one key from threads share one computation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}

    def run(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """The result of ``compute`` for ``key``, and whether this caller joined a flight."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.value, True
        try:
            call.value = compute()
            return call.value, False
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
