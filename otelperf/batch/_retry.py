"""Delivering one batch: retries with backoff and jitter, and isolating poison items.

Two kinds of failure need opposite treatment. When the sink is down (connection
refused, table missing, a timeout), every item would fail alike: retry the whole
batch after a growing delay, and dead-letter it when the attempts are spent. When
the sink refuses the *data* (a constraint violation, a value it cannot encode), the
batch is split in halves, each delivered on its own, until the offending item is
alone; it is dead-lettered at once (retrying the same data cannot help) while its
batch-mates are written. The sink tells which is which (``is_item_error``).

The work is an explicit stack of parts, not recursion, so that a cancellation (the
shutdown deadline) knows exactly which items are unresolved and can dead-letter
them: nothing is lost and nothing counted twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Backoff", "DeliveryListener", "deliver"]


@dataclass(frozen=True)
class Backoff:
    """How often and how patiently a batch is retried.

    ``attempts`` counts the first try: 5 means one try and up to four retries. The
    n-th retry waits ``min(max_delay, base * 2**(n-1))``; with ``jitter`` a random
    share of that, between half and all of it, so that many workers retrying
    against the same recovering database do not all come back at once.
    """

    attempts: int = 5
    base: float = 0.1
    max_delay: float = 10.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base < 0 or self.max_delay < 0:
            raise ValueError("backoff delays must not be negative")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        # min() before the power would overflow for absurd retry counts.
        delay = min(self.max_delay, self.base * 2.0 ** min(retry - 1, 64))
        if self.jitter:
            delay = random.uniform(delay / 2.0, delay)
        return delay


class DeliveryListener(Protocol):
    """What happens to the items of a batch, as it happens."""

    def written(self, items: Sequence[Any]) -> None:
        """``items`` are in the sink."""

    def retried(self, items: Sequence[Any], error: BaseException, delay: float) -> None:
        """``items`` failed and will be sent again (after ``delay`` s; 0 for a split)."""

    def failed(
        self, items: Sequence[Any], error: BaseException | None, reason: str, attempts: int
    ) -> None:
        """``items`` will not be written: ``reason`` is ``rejected`` (a poison item),
        ``retries_exhausted`` or ``shutdown`` (the shutdown deadline came first)."""


async def deliver(
    items: list[Any],
    *,
    write: Callable[[list[Any]], Awaitable[object]],
    is_item_error: Callable[[BaseException], bool],
    backoff: Backoff,
    deadline: Callable[[], float | None],
    listener: DeliveryListener,
) -> None:
    """Write ``items`` through ``write``; every item ends written or failed, exactly once.

    ``deadline()`` is the monotonic time after which no retry may start (the
    shutdown deadline), or None. Cancellation fails the unresolved items with
    reason ``shutdown`` and propagates.
    """
    stack: list[list[Any]] = [items]
    part: list[Any] | None = None
    attempt = 0
    last_error: BaseException | None = None
    try:
        while stack:
            part = stack.pop()
            attempt = 0
            while part is not None:
                attempt += 1
                try:
                    await write(part)
                except Exception as exc:
                    last_error = exc
                    if is_item_error(exc):
                        if len(part) == 1:
                            listener.failed(part, exc, "rejected", attempt)
                        else:
                            middle = len(part) // 2
                            # Pushed right first so the left half goes first: order is kept.
                            stack.append(part[middle:])
                            stack.append(part[:middle])
                            listener.retried(part, exc, 0.0)
                        part = None
                        continue
                    if attempt >= backoff.attempts:
                        listener.failed(part, exc, "retries_exhausted", attempt)
                        part = None
                        continue
                    delay = backoff.delay(attempt)
                    limit = deadline()
                    if limit is not None and time.monotonic() + delay >= limit:
                        listener.failed(part, exc, "shutdown", attempt)
                        part = None
                        continue
                    listener.retried(part, exc, delay)
                    await asyncio.sleep(delay)
                else:
                    listener.written(part)
                    part = None
    except BaseException:
        # Cancelled (the shutdown deadline) or a bug in a listener: what is not resolved
        # must still end somewhere, in order.
        unresolved = ([part] if part is not None else []) + stack[::-1]
        for rest in unresolved:
            listener.failed(rest, last_error, "shutdown", attempt)
        raise
