"""The bounded queue under a batcher: items grouped into batches as they arrive.

No I/O and no event loop here: this is the core both ``await batcher.put`` (on the
loop) and ``batcher.put_sync`` (from any thread) share, so one lock guards it. Items
land directly in *chunks* of at most ``max_size``: a full chunk is a batch ready to
flush, taking it is one ``popleft``, and the age of a batch is the age of its chunk.

Every item offered ends, exactly once, in one of: written, dead-lettered, dropped
(counted by reason), or still held (queued or being written). The counters here and
in the batcher keep ``produced = written + dead_lettered + dropped + held`` true at
every instant the lock is free.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

__all__ = [
    "ACCEPTED",
    "CLOSED",
    "DROPPED",
    "DROP_REASONS",
    "FILLED",
    "FULL",
    "NEED_SHARE",
    "READY",
    "REFUSED",
    "BatchQueue",
    "Chunk",
    "OnFull",
]

OnFull = Literal["block", "drop_oldest", "drop_newest", "raise"]

# What an offer did with the item.
ACCEPTED = 0
"""Queued."""
READY = 1
"""Queued in an empty queue: the collector should look (and set its timer)."""
FILLED = 6
"""Queued, and its batch is now full: the collector should flush it."""
DROPPED = 2
"""Dropped because the queue is full (``drop_newest``); counted."""
FULL = 3
"""Not queued, not counted: the caller blocks (``block``) and offers again."""
REFUSED = 4
"""Refused because the queue is full (``raise``, or ``block`` gave up); counted."""
CLOSED = 5
"""Refused because the batcher is stopped; counted."""
NEED_SHARE = 7
"""Not queued, not counted: another thread must first make the loop take the lock."""

DROP_REASONS = ("queue_full", "evicted", "closed", "undeliverable")
"""Why items were dropped: refused when full, evicted by ``drop_oldest``, put after
stop, or failed with no dead-letter file to take them (or one that could not be written)."""


class Chunk:
    """A batch being formed: its items, when its first item arrived, spans to link."""

    __slots__ = ("born", "items", "links", "next_link", "seq")

    def __init__(self, item: Any, born: float, seq: int) -> None:
        self.items: list[Any] = [item]
        self.born = born
        self.seq = seq
        self.links: list[Any] = []
        # The item count after which the enqueuing span is looked up next (-1: never).
        self.next_link = -1


class BatchQueue:
    """At most ``max_queue`` items held (queued or being written), in chunks of ``max_size``."""

    __slots__ = (
        "async_waiters",
        "call_in_loop",
        "capture_link",
        "chunks",
        "closed",
        "dropped",
        "held",
        "in_flight",
        "limit",
        "link_every",
        "lock",
        "max_links",
        "max_queue",
        "max_size",
        "max_wait",
        "on_full",
        "produced",
        "seq",
        "shared",
        "space",
        "tail",
        "thread_waiters",
        "threads_seen",
    )

    def __init__(
        self,
        *,
        max_size: int,
        max_wait: float,
        max_queue: int,
        on_full: OnFull,
        max_links: int,
        capture_link: Callable[[], Any] = lambda: None,
    ) -> None:
        self.max_size = max_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.on_full: OnFull = on_full
        self.max_links = max_links
        # The enqueuing span is looked up for max_links items spread evenly through each
        # batch, not for all of them: the lookup costs more than the rest of a put.
        self.link_every = max(1, max_size // max_links) if max_links else 0
        self.capture_link = capture_link
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)
        self.chunks: deque[Chunk] = deque()
        self.tail: Chunk | None = None  # the newest chunk while it has room
        self.async_waiters: deque[Any] = deque()  # asyncio futures of blocked ``put`` calls
        self.thread_waiters = 0
        # While only the event loop's thread produces, it may skip the lock (the lock costs
        # more than the rest of a put). ``shared`` turns True, for good, on the loop's
        # thread, before any other thread touches the queue; it starts True until the
        # batcher starts and knows its loop.
        self.shared = True
        self.threads_seen = False
        self.call_in_loop: Callable[[Callable[[], None]], Any] | None = None
        self.closed = False
        self.limit = max_queue  # 0 once closed: one comparison guards the fast path
        self.seq = 0  # sequence number of the newest chunk
        # Counters (written and dead-lettered are the batcher's; it owns delivery).
        self.produced = 0
        self.held = 0
        self.in_flight = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)

    @property
    def queued(self) -> int:
        """Items waiting for a flush (held and not being written)."""
        return self.held - self.in_flight

    # --- producers ----------------------------------------------------------------

    def offer(self, item: Any) -> int:
        """Queue ``item`` if there is room, else apply ``on_full``; see the result codes."""
        with self.lock:
            return self.offer_exclusive(item)

    def offer_from_thread(self, item: Any) -> int:
        """``offer`` from a thread other than the event loop's: NEED_SHARE until the loop
        has agreed to take the lock too (see :attr:`shared`)."""
        with self.lock:
            if not self.shared:
                return NEED_SHARE
            self.threads_seen = True
            return self.offer_exclusive(item)

    def offer_exclusive(self, item: Any) -> int:
        """``offer`` by a caller that excludes every other: holding the lock, or the event
        loop's thread while the queue is not shared."""
        tail = self.tail
        if tail is not None and self.held < self.limit:  # the fast path: room, and a chunk
            items = tail.items
            items.append(item)
            self.produced += 1
            self.held += 1
            count = len(items)
            if count == tail.next_link:
                self.link(tail)
            if count == self.max_size:
                self.tail = None
                return FILLED
            return ACCEPTED
        return self.offer_locked(item)

    def offer_locked(self, item: Any) -> int:
        """``offer_exclusive`` past its fast path."""
        if self.closed:
            self.produced += 1
            self.dropped["closed"] += 1
            return CLOSED
        if self.held >= self.max_queue:
            mode = self.on_full
            if mode == "drop_oldest" and self.held > self.in_flight:
                self._evict_oldest()
            elif mode == "block":
                return FULL
            else:  # raise, drop_newest, or drop_oldest with everything held being written
                self.produced += 1
                self.dropped["queue_full"] += 1
                return REFUSED if mode == "raise" else DROPPED
        self.produced += 1
        self.held += 1
        tail = self.tail
        if tail is not None:
            items = tail.items
            items.append(item)
            if len(items) == tail.next_link:
                self.link(tail)
            if len(items) == self.max_size:
                self.tail = None
                return FILLED
            return ACCEPTED
        self.seq += 1
        tail = Chunk(item, time.monotonic(), self.seq)
        self.chunks.append(tail)
        if self.link_every:
            tail.next_link = 1
            self.link(tail)
        if self.max_size == 1:
            return FILLED
        self.tail = tail
        return READY if len(self.chunks) == 1 else ACCEPTED

    def offer_waiting(self, item: Any, timeout: float) -> int:
        """``offer`` for a thread that may block up to ``timeout`` s (``on_full: block``).

        Returns REFUSED (counted) when no room came in time. Call it only after
        ``offer_from_thread`` (the queue is then shared), and never on the event loop's
        thread: the room comes from the loop.
        """
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                result = self.offer_locked(item)
                if result != FULL:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.give_up_locked(on_loop=False)
                    return REFUSED
                self.thread_waiters += 1
                try:
                    self.space.wait(remaining)
                finally:
                    self.thread_waiters -= 1

    def give_up_locked(self, *, on_loop: bool) -> None:
        """Count a blocked offer that ended without queuing its item (timeout, cancellation).

        A wake-up it may have consumed is passed on; asyncio futures are only touched
        on the loop thread, so from another thread that goes through ``call_in_loop``.
        """
        self.produced += 1
        self.dropped["queue_full"] += 1
        if on_loop:
            self.pass_space_on_locked()
            return
        if self.thread_waiters and self.held < self.max_queue:
            self.space.notify()
        if self.async_waiters and self.call_in_loop is not None:
            self.call_in_loop(self._pass_space_on)

    def _pass_space_on(self) -> None:
        with self.lock:
            self.pass_space_on_locked()

    def link(self, chunk: Chunk) -> None:
        """Note the span enqueuing the chunk's newest item; plan the next lookup."""
        links = chunk.links
        if len(links) < self.max_links:
            link = self.capture_link()
            if link is not None and link not in links:
                links.append(link)
            chunk.next_link += self.link_every
        else:
            chunk.next_link = -1

    def _evict_oldest(self) -> None:
        head = self.chunks[0]
        del head.items[0]
        if not head.items:
            self.chunks.popleft()
            if head is self.tail:
                self.tail = None
        self.held -= 1
        self.dropped["evicted"] += 1

    # --- the collector ------------------------------------------------------------

    def take_locked(self, now: float, force_seq: int, draining: bool) -> Chunk | None:
        """The oldest chunk if it is due (full, old enough, forced or draining), else None."""
        chunks = self.chunks
        if not chunks:
            return None
        head = chunks[0]
        if (
            len(head.items) >= self.max_size
            or draining
            or head.seq <= force_seq
            or now >= head.born + self.max_wait
        ):
            chunks.popleft()
            if head is self.tail:
                self.tail = None
            self.in_flight += len(head.items)
            return head
        return None

    def next_due_locked(self) -> float | None:
        """When the oldest chunk becomes due by age (monotonic clock), or None if empty."""
        return self.chunks[0].born + self.max_wait if self.chunks else None

    def take_all_locked(self) -> list[Chunk]:
        """Every queued chunk (at shutdown), now counted in flight until released."""
        chunks = list(self.chunks)
        self.chunks.clear()
        self.tail = None
        self.in_flight += sum(len(c.items) for c in chunks)
        return chunks

    def release_locked(self, count: int) -> None:
        """``count`` items in flight were resolved (written, dead-lettered, dropped)."""
        self.held -= count
        self.in_flight -= count
        self.pass_space_on_locked()

    def pass_space_on_locked(self) -> None:
        """Wake blocked producers when there is room (all of them once closed); on the loop."""
        room = self.max_queue - self.held
        if self.closed:
            room = len(self.async_waiters) + self.thread_waiters
        if room <= 0:
            return
        waiters = self.async_waiters
        woken = 0
        while waiters and woken < room:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                woken += 1
        if self.thread_waiters and woken < room:
            self.space.notify(room - woken)

    def close_locked(self) -> None:
        """Refuse new items from now on, and wake every blocked producer to tell it."""
        self.closed = True
        self.limit = 0
        self.pass_space_on_locked()

    def reopen_locked(self) -> None:
        """Accept items again (the batcher (re)starts); unshared if no thread ever produced."""
        self.closed = False
        self.limit = self.max_queue
        self.shared = self.threads_seen
