"""Per-operation deadlines for async Redis calls, without a timer per call.

``asyncio.timeout`` schedules and cancels a timer handle for every call (about 10 µs
on a small VM, as much as the rest of a cache hit's own work). Here a call only
notes its deadline in a dict; one watchdog callback, scheduled while calls are in
flight, wakes every ``tick`` seconds and cancels the tasks whose deadline passed.
A call thus ends at most ``tick`` after its deadline; the cancellation is turned
back into a timeout for that call (``Task.uncancel``), and a cancellation coming
from elsewhere still propagates.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Deadlines", "Op"]


class Op:
    """One armed deadline."""

    __slots__ = ("deadline", "fired", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.fired = False


class Deadlines:
    """The deadlines of every in-flight operation of one store."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(0.01, max(0.001, timeout / 10))
        self._ops: dict[int, Op] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self) -> Op:
        """Start the clock for the current task's operation."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - always inside a task under asyncio
            raise RuntimeError("a cache operation must run inside an asyncio task")
        op = Op(task, loop.time() + self.timeout)
        self._ops[id(op)] = op
        if self._handle is None or self._loop is not loop:
            self._loop = loop
            self._handle = loop.call_later(self.tick, self._watch, loop)
        return op

    def disarm(self, op: Op) -> None:
        """The operation ended (in any way)."""
        self._ops.pop(id(op), None)

    def expired(self, op: Op) -> bool:
        """Whether a CancelledError seen by ``op`` is its own deadline (and only that).

        Call it in ``except CancelledError``: True means "report a timeout"; False
        means the cancellation came from elsewhere and must propagate.
        """
        if not op.fired:
            return False
        uncancel = getattr(op.task, "uncancel", None)  # Python 3.11+
        return uncancel is None or uncancel() == 0

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return
        self._handle = None
        if not self._ops:
            return
        now = loop.time()
        for op in list(self._ops.values()):
            if not op.fired and now >= op.deadline:
                op.fired = True
                op.task.cancel()
        if self._ops and not loop.is_closed():
            self._handle = loop.call_later(self.tick, self._watch, loop)

    def close(self) -> None:
        """Stop watching (the store is closing)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._ops.clear()
