"""Telemetry for finished operations, reported in one batch on the event loop's next turn.

A cache read or a query is over by the time it is reported; recording its span and
points right away would put a cold pass over the telemetry code between every two
awaits of the application. Instead the finished operations queue up and are reported
together by one callback the loop runs on its next turn (and by ``flush`` at close).

Safe across threads and loops: the queue is a deque (append and popleft are atomic),
and a callback is scheduled again whenever the loop asking is not the one that got the
last callback (a loop closed before it ran the callback leaves nothing stuck).
"""

from __future__ import annotations

import weakref
from asyncio import AbstractEventLoop
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["NextTurn", "flush_all"]

T = TypeVar("T")

_LIVE: weakref.WeakSet[NextTurn[Any]] = weakref.WeakSet()


def flush_all() -> None:
    """Report what every queue holds now (``otelperf.testing`` does, before it answers)."""
    for turn in list(_LIVE):
        turn.flush()


class NextTurn(Generic[T]):
    """Items handed to ``report`` on the loop's next turn, in the order they came."""

    __slots__ = ("__weakref__", "_items", "_loop", "_report", "_scheduled")

    def __init__(self, report: Callable[[T], None]) -> None:
        self._items: deque[T] = deque()
        self._report = report
        self._scheduled = False
        self._loop: AbstractEventLoop | None = None
        _LIVE.add(self)

    def add(self, item: T, loop: AbstractEventLoop) -> None:
        """Queue ``item``; ``loop`` (the running one) reports it on its next turn."""
        self._items.append(item)
        if not self._scheduled or self._loop is not loop:
            self._scheduled = True
            self._loop = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Report everything queued (``report`` must not raise)."""
        self._scheduled = False  # first: an item added from now on gets its own callback
        items, report = self._items, self._report
        while items:
            try:
                item = items.popleft()
            except IndexError:  # another thread's flush took the last one
                return
            report(item)
