"""The Batcher: groups writes, flushes them by size or age, loses nothing.

One collector task per batcher takes batches off the queue: a batch is due when it
holds ``max_size`` items, or when its oldest item has waited ``max_wait`` (a timer
wakes the collector, no new item is needed), or when ``flush()``/``stop()`` asks.
Up to ``concurrency`` batches are written at once (1 keeps the order of items).

Producers never wait on the fast path: ``put`` appends to the open batch and
returns without yielding to the event loop (measured: yielding once per full batch
to start its flush sooner made bulk loads slower, not faster). It suspends only
when it must wait for room (``on_full: block``). The queue's lock, which costs more
than the rest of a put, is skipped while the loop's thread is the only producer;
the first other thread to produce makes the loop take it from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

from otelperf._component import ComponentTelemetry
from otelperf._errors import error_type
from otelperf._redact import redact_text
from otelperf.batch._deadletter import DeadLetterFile
from otelperf.batch._errors import BatcherClosedError, BatcherError, BatcherFullError
from otelperf.batch._queue import (
    ACCEPTED,
    CLOSED,
    DROPPED,
    FILLED,
    FULL,
    NEED_SHARE,
    READY,
    REFUSED,
    BatchQueue,
    Chunk,
    OnFull,
)
from otelperf.batch._retry import Backoff, deliver
from otelperf.batch._sinks import Sink, default_is_item_error, sink_kind
from otelperf.batch._stats import BatcherStats
from otelperf.batch._telemetry import BatchTelemetry, current_link

__all__ = ["Batcher"]

_log = logging.getLogger("otelperf.batch")
get_ident = threading.get_ident

_ON_FULL = ("block", "drop_oldest", "drop_newest", "raise")
_timeout = getattr(asyncio, "timeout", None)
"""``asyncio.timeout`` (3.11+): no task per write, unlike ``wait_for``."""
_SHARE_WAIT = 5.0
"""Seconds a thread waits for the loop to agree to share the queue (see ``_share``)."""
_CANCEL_GRACE = 5.0
"""Seconds stop() waits for cancelled flushes to dead-letter what they held."""


class Batcher:
    """Queues items and writes them to a sink in batches, by size or by age.

    ::

        batcher = Batcher("events", JsonlFileSink("events.jsonl"), max_size=500, max_wait=2.0)
        await batcher.start(ComponentTelemetry(tracer, meter))
        await batcher.put({"kind": "click"})          # from async code
        batcher.put_sync({"kind": "click"})           # from any thread
        await batcher.stop()                          # drains within shutdown_deadline

    Every item put ends written, dead-lettered (``dead_letter``: a JSON-lines file,
    one line per item with the error) or dropped (counted by reason); see
    :meth:`stats`. Without a dead-letter file, items that cannot be written are
    logged and counted as dropped (reason ``undeliverable``).

    Options: ``max_queue`` bounds the items held (queued or being written); when it
    is reached, ``on_full`` decides: ``block`` (``put`` waits up to
    ``block_timeout``, then raises :class:`BatcherFullError`), ``drop_oldest``,
    ``drop_newest`` (``put`` returns False) or ``raise``. A failed batch is retried
    per ``retry`` (a :class:`Backoff`); a batch the sink refuses because of its data
    is split until the poison item is alone. ``write_timeout`` bounds one write of
    a batch (None: unbounded). ``max_links`` caps the links from a flush span to the
    sampled spans that enqueued its items (looked up on ``max_links`` items spread
    evenly through the batch).
    """

    def __init__(
        self,
        name: str,
        sink: Sink,
        *,
        max_size: int = 500,
        max_wait: float = 2.0,
        max_queue: int = 100_000,
        on_full: OnFull = "block",
        block_timeout: float = 5.0,
        concurrency: int = 1,
        retry: Backoff | None = None,
        dead_letter: str | os.PathLike[str] | None = None,
        shutdown_deadline: float = 10.0,
        write_timeout: float | None = 30.0,
        max_links: int = 32,
    ) -> None:
        checks = (
            (max_size < 1, f"max_size must be at least 1, got {max_size}"),
            (
                max_queue < max_size,
                f"max_queue ({max_queue}) must be greater or equal than max_size ({max_size})",
            ),
            (on_full not in _ON_FULL, f"on_full must be one of {', '.join(_ON_FULL)}"),
            (not max_wait > 0, f"max_wait must be positive, got {max_wait}"),
            (not block_timeout > 0, f"block_timeout must be positive, got {block_timeout}"),
            (concurrency < 1, f"concurrency must be at least 1, got {concurrency}"),
            (
                not shutdown_deadline > 0,
                f"shutdown_deadline must be positive, got {shutdown_deadline}",
            ),
            (
                write_timeout is not None and not write_timeout > 0,
                f"write_timeout must be positive or None, got {write_timeout}",
            ),
            (max_links < 0, f"max_links must not be negative, got {max_links}"),
            (
                not callable(getattr(sink, "write", None)),
                f"the sink {sink!r} has no write(items) method",
            ),
        )
        problems = [text for bad, text in checks if bad]
        if problems:
            raise BatcherError(f"batcher {name!r}: " + "; ".join(problems))
        self.name = name
        self.sink = sink
        self.max_size = max_size
        self.max_queue = max_queue
        self.shutdown_deadline = shutdown_deadline
        self.block_timeout = block_timeout
        self.concurrency = concurrency
        self.backoff = retry if retry is not None else Backoff()
        self.dead_letter = (
            DeadLetterFile(dead_letter, batcher=name) if dead_letter is not None else None
        )
        cancellable = getattr(sink, "cancellable", True) is not False
        self._write_timeout = write_timeout if cancellable else None
        is_item_error = getattr(sink, "is_item_error", None)
        self._is_item_error: Callable[[BaseException], bool] = (
            is_item_error if callable(is_item_error) else default_is_item_error
        )
        self._queue = BatchQueue(
            max_size=max_size,
            max_wait=max_wait,
            max_queue=max_queue,
            on_full=on_full,
            max_links=max_links,
            capture_link=current_link,
        )
        self._offer = self._queue.offer
        # Counted under the queue's lock, with the release of the items they resolve.
        self._written = 0
        self._dead_lettered = 0
        self._retried = 0
        # Loop-side state.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._telemetry: BatchTelemetry | None = None
        self._collector: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._force_seq = 0
        self._draining = False
        self._deadline: float | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._in_flight: set[int] = set()
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Batcher {self.name!r} {state} sink={self.sink!r} held={self._queue.held}>"

    @property
    def running(self) -> bool:
        """Started, and not stopping."""
        collector = self._collector
        return collector is not None and not collector.done() and self._stopping is None

    # --- producing -------------------------------------------------------------

    async def put(self, item: Any) -> bool:
        """Queue ``item``; True if queued, False if dropped (``on_full: drop_newest``).

        When the queue is full: with ``on_full: block`` this waits for room up to
        ``block_timeout``, then raises :class:`BatcherFullError`, as ``raise`` does at
        once; ``drop_oldest`` evicts the oldest queued item to make room. After
        :meth:`stop`, raises :class:`BatcherClosedError`. Every outcome is counted.
        """
        queue = self._queue
        if queue.shared or get_ident() != self._loop_thread:
            result = self._offer_shared(item)
        else:
            # The loop's thread, and no other thread has produced: nothing can interleave
            # (no await before the item is queued), so the lock is not needed. The fast
            # path of BatchQueue.offer_exclusive, inlined: a call costs as much as the rest.
            tail = queue.tail
            if tail is not None and queue.held < queue.limit:
                items = tail.items
                items.append(item)
                queue.produced += 1
                queue.held += 1
                count = len(items)
                if count == tail.next_link:
                    queue.link(tail)
                if count == queue.max_size:
                    queue.tail = None
                    self._wake()
                return True
            result = queue.offer_locked(item)
        if result == ACCEPTED:
            return True
        if result == FULL:
            return await self._put_blocking(item)
        return self._settle(result)

    def put_sync(self, item: Any) -> bool:
        """``put`` for synchronous code, from any thread; blocks (``on_full: block``) only
        in threads other than the event loop's, where blocking would stall the flushes."""
        result = self._offer_shared(item)
        if result == ACCEPTED:
            return True
        if result == FULL:
            queue = self._queue
            if get_ident() == self._loop_thread:
                with queue.lock:
                    queue.give_up_locked(on_loop=True)
                raise BatcherFullError(
                    f"batcher {self.name!r} is full ({self.max_queue} items held) and put_sync "
                    "was called on the event loop's thread, where blocking would stop the "
                    "flushes that make room; the item was dropped. Use await batcher.put(item) "
                    "in async code"
                )
            result = queue.offer_waiting(item, self.block_timeout)
            if result == REFUSED:  # no room came within block_timeout
                raise self._full_error(waited=True)
        return self._settle(result)

    def _offer_shared(self, item: Any) -> int:
        """Offer under the lock; from another thread, first make the loop take it too."""
        queue = self._queue
        if get_ident() == self._loop_thread:
            return queue.offer(item)
        while True:
            result = queue.offer_from_thread(item)
            if result != NEED_SHARE:
                return result
            self._share()

    def _share(self) -> None:
        """Another thread is about to produce: from now on the loop's puts take the lock.

        The switch happens on the loop's thread, between two steps of its tasks, so no
        put without the lock is half done when this thread starts taking it.
        """
        queue = self._queue
        switched = threading.Event()

        def switch() -> None:
            with queue.lock:
                queue.shared = True
                queue.threads_seen = True
            switched.set()

        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            switch()  # no loop step can be running a put
            return
        try:
            loop.call_soon_threadsafe(switch)
        except RuntimeError:  # closed meanwhile
            switch()
            return
        if not switched.wait(_SHARE_WAIT):
            switch()  # the loop is stuck elsewhere (not inside a put): switching is safe

    def _settle(self, result: int) -> bool:
        if result in (READY, FILLED):
            self._wake_any()
            return True
        if result == ACCEPTED:
            return True
        if result == DROPPED:
            return False
        if result == CLOSED:
            raise BatcherClosedError(
                f"batcher {self.name!r} is stopped; the item was dropped (counted). Stop "
                "producing before the shutdown ends, or start the batcher again"
            )
        raise self._full_error(waited=False)

    def _full_error(self, *, waited: bool) -> BatcherFullError:
        if waited:
            return BatcherFullError(
                f"batcher {self.name!r} stayed full ({self.max_queue} items held) for "
                f"block_timeout={self.block_timeout:g}s; the item was dropped (counted). The "
                "sink is slow or failing: see otelperf.batch.flush.duration and the "
                "dead-letter file, or raise max_queue, concurrency or block_timeout"
            )
        return BatcherFullError(
            f"batcher {self.name!r} is full ({self.max_queue} items held) and on_full is "
            "'raise'; the item was dropped (counted). Raise max_queue or concurrency, or "
            "choose on_full: block or drop_oldest"
        )

    async def _put_blocking(self, item: Any) -> bool:
        loop = asyncio.get_running_loop()
        if self._loop is not None and loop is not self._loop:
            # Another event loop (another thread): room is announced on ours.
            return await asyncio.to_thread(self._put_waiting_thread, item)
        queue = self._queue
        deadline = loop.time() + self.block_timeout
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            with queue.lock:
                result = queue.offer_locked(item)
                if result == FULL:
                    queue.async_waiters.append(waiter)
            if result != FULL:
                return self._settle(result)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except BaseException as exc:
                with queue.lock:
                    with contextlib.suppress(ValueError):
                        queue.async_waiters.remove(waiter)
                    queue.give_up_locked(on_loop=True)
                if isinstance(exc, asyncio.TimeoutError):
                    raise self._full_error(waited=True) from None
                raise

    def _put_waiting_thread(self, item: Any) -> bool:
        # The put that got FULL came from this other loop's thread: the queue is shared.
        result = self._queue.offer_waiting(item, self.block_timeout)
        if result == REFUSED:  # no room came within block_timeout
            raise self._full_error(waited=True)
        return self._settle(result)

    def _wake(self) -> None:
        """Wake the collector; on the loop's thread only."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_any(self) -> None:
        """Wake the collector from any thread (a no-op when it is not waiting)."""
        if self._waiter is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake()
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: stop() resolved all
                loop.call_soon_threadsafe(self._wake)

    # --- lifecycle --------------------------------------------------------------

    async def start(self, telemetry: ComponentTelemetry) -> None:
        """Open the dead-letter file and the sink, and start flushing. Idempotent."""
        if self.running:
            return
        if self._stopping is not None and not self._stopping.done():
            await asyncio.shield(self._stopping)
        loop = asyncio.get_running_loop()
        if self.dead_letter is not None:
            self.dead_letter.open()
        opener = getattr(self.sink, "open", None)
        if callable(opener):
            try:
                await opener()
            except BatcherError:
                raise
            except Exception as exc:
                raise BatcherError(
                    f"batcher {self.name!r}: its sink {self.sink!r} failed to open: "
                    + redact_text(f"{type(exc).__name__}: {exc}")
                ) from None
        if self._telemetry is not None:
            self._telemetry.detach()
        self._telemetry = BatchTelemetry(
            name=self.name,
            sink=sink_kind(self.sink),
            limit=self.max_queue,
            tracer=telemetry.tracer,
            meter=telemetry.meter,
            stats=self.stats,
        )
        self._loop = loop
        self._loop_thread = threading.get_ident()
        queue = self._queue
        with queue.lock:
            queue.reopen_locked()
            queue.call_in_loop = loop.call_soon_threadsafe
        self._draining = False
        self._deadline = None
        self._stopping = None
        self._slots = asyncio.Semaphore(self.concurrency) if self.concurrency > 1 else None
        self._collector = loop.create_task(self._collect(), name=f"otelperf batcher {self.name}")

    async def stop(self) -> None:
        """Flush everything within ``shutdown_deadline``; dead-letter what is left. Idempotent.

        New ``put`` calls are refused from the start of the stop. Batches being written
        when the deadline comes are cancelled and their items dead-lettered (a write
        cancelled while its commit was already on the wire may also have landed: at
        that boundary delivery is at-least-once).
        """
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
            return
        loop = asyncio.get_running_loop()
        self._stopping = loop.create_future()
        try:
            await self._drain()
        finally:
            self._stopping.set_result(None)

    async def _drain(self) -> None:
        queue = self._queue
        self._deadline = time.monotonic() + self.shutdown_deadline
        with queue.lock:
            queue.close_locked()
        self._draining = True
        self._wake()
        collector = self._collector
        try:
            if collector is not None:
                remaining = self._deadline - time.monotonic()
                await asyncio.wait({collector}, timeout=max(0.0, remaining))
                if collector.done() and self._tasks:
                    remaining = self._deadline - time.monotonic()
                    await asyncio.wait(set(self._tasks), timeout=max(0.0, remaining))
        finally:
            late = [t for t in (collector, *self._tasks) if t is not None and not t.done()]
            for task in late:
                task.cancel()
            if late:
                _log.warning(
                    "batcher %r: shutdown deadline of %gs reached with batches still being "
                    "written; they are cancelled and their items dead-lettered",
                    self.name, self.shutdown_deadline,
                )  # fmt: skip
                _, stuck = await asyncio.wait(late, timeout=_CANCEL_GRACE)
                if stuck:
                    _log.error(
                        "batcher %r: %d flush(es) ignored cancellation for %gs; their items "
                        "stay counted as in flight", self.name, len(stuck), _CANCEL_GRACE,
                    )  # fmt: skip
            if collector is not None and collector.done() and not collector.cancelled():
                error = collector.exception()
                if error is not None:
                    _log.error("batcher %r: the collector failed", self.name, exc_info=error)
            with queue.lock:
                leftovers = [item for chunk in queue.take_all_locked() for item in chunk.items]
            self._fail(leftovers, None, "shutdown", 0)  # one write, one log line
            await self._close_sink()
            if self.dead_letter is not None:
                self.dead_letter.close()
            self._notify_flushed(final=True)
            await asyncio.sleep(0)  # the last flushes' spans end before telemetry shuts down

    async def _close_sink(self) -> None:
        closer = getattr(self.sink, "close", None)
        if not callable(closer):
            return
        try:
            result = closer()
            if inspect.isawaitable(result):
                await result
        except Exception:
            _log.exception("batcher %r: closing its sink %r failed", self.name, self.sink)

    def readiness_check(self) -> Callable[[], Awaitable[object]] | None:
        """Ready while running with room in the queue (a full queue means blocked producers)."""

        async def batcher_ready() -> bool:
            return self.running and self._queue.held < self.max_queue

        return batcher_ready

    async def ping(self) -> None:
        """Check the sink (and the dead-letter file) can be reached; raise when not."""
        if self.dead_letter is not None:
            self.dead_letter.check()
        pinger = getattr(self.sink, "ping", None)
        if callable(pinger):
            await pinger()

    async def flush(self) -> None:
        """Wait until every item put before this call is written or dead-lettered.

        Batches are sent now, whatever their size or age. Raises BatcherError if the
        batcher was never started (nothing would ever write them).
        """
        if self._collector is None:
            raise BatcherError(f"batcher {self.name!r} is not started; nothing would flush it")
        queue = self._queue
        with queue.lock:
            target = queue.seq
            oldest = self._oldest_unresolved_locked()
        if oldest > target or not self.running:
            if self.running or self._stopping is None:
                return
            await asyncio.shield(self._stopping)
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._flush_waiters.append((target, waiter))
        self._force_seq = max(self._force_seq, target)
        self._wake()
        await waiter

    def stats(self) -> BatcherStats:
        """The counters now; ``produced == written + dead_lettered + dropped + held``.

        Exact on the event loop's thread. From another thread (a metrics reader) while
        only the loop produces, a put may be half counted: the loop skips the lock then.
        """
        queue = self._queue
        with queue.lock:
            dropped = dict(queue.dropped)
            return BatcherStats(
                produced=queue.produced,
                written=self._written,
                dead_lettered=self._dead_lettered,
                dropped=sum(dropped.values()),
                queued=queue.queued,
                in_flight=queue.in_flight,
                retried=self._retried,
                dropped_by_reason=dropped,
            )

    # --- the collector -----------------------------------------------------------

    async def _collect(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        slots = self._slots
        while True:
            if slots is not None:
                await slots.acquire()
            with queue.lock:
                chunk = queue.take_locked(time.monotonic(), self._force_seq, self._draining)
                if chunk is not None:
                    self._in_flight.add(chunk.seq)
                else:
                    if self._draining:
                        if slots is not None:
                            slots.release()
                        return
                    due = queue.next_due_locked()
                    waiter = self._waiter = loop.create_future()
            if chunk is None:
                if slots is not None:
                    slots.release()
                timer = None
                if due is not None:
                    timer = loop.call_later(max(0.0, due - time.monotonic()), self._wake)
                try:
                    await waiter
                finally:
                    self._waiter = None
                    if timer is not None:
                        timer.cancel()
                continue
            if slots is None:
                await self._flush(chunk)
            else:
                task = loop.create_task(self._flush_then_release(chunk, slots))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _flush_then_release(self, chunk: Chunk, slots: asyncio.Semaphore) -> None:
        try:
            await self._flush(chunk)
        finally:
            slots.release()
            self._wake()  # a slot is free: the collector may take the next batch

    async def _flush(self, chunk: Chunk) -> None:
        items = chunk.items
        size = len(items)
        telemetry = self._telemetry
        if telemetry is None:  # pragma: no cover - the collector only runs once started
            raise RuntimeError("batcher flushing before start")
        span = telemetry.start_flush(size, chunk.links)
        outcome = _FlushOutcome(self, span)
        started = time.perf_counter()
        span_context = trace.set_span_in_context(span)
        token = context_api.attach(span_context)
        try:
            await deliver(
                items,
                write=self._write,
                is_item_error=self._is_item_error,
                backoff=self.backoff,
                deadline=self._get_deadline,
                listener=outcome,
            )
        finally:
            context_api.detach(token)
            duration = time.perf_counter() - started
            with self._queue.lock:
                self._in_flight.discard(chunk.seq)
            self._notify_flushed()
            # Ending the span and recording its points is SDK work off the critical path:
            # it runs while the next batch waits on its sink, at the times measured here.
            asyncio.get_running_loop().call_soon(
                self._end_flush,
                telemetry,
                span,
                span_context,
                size,
                duration,
                time.time_ns(),
                outcome,
            )

    def _end_flush(
        self,
        telemetry: BatchTelemetry,
        span: Span,
        span_context: Context,
        size: int,
        duration: float,
        end_time: int,
        outcome: _FlushOutcome,
    ) -> None:
        try:
            telemetry.end_flush(
                span,
                span_context,
                size=size,
                duration=duration,
                end_time=end_time,
                written=outcome.written_count,
                failed=outcome.failed_count,
                error_type=outcome.error_type,
            )
        except Exception:  # telemetry never breaks delivery
            _log.exception("batcher %r: recording a flush failed", self.name)

    async def _write(self, items: list[Any]) -> None:
        result: Any = self.sink.write(items)
        if not inspect.isawaitable(result):
            return
        timeout = self._write_timeout
        if timeout is None:
            await result
        elif _timeout is not None:
            async with _timeout(timeout):
                await result
        else:  # Python 3.10
            await asyncio.wait_for(result, timeout)

    def _get_deadline(self) -> float | None:
        return self._deadline

    def _fail(
        self, items: Sequence[Any], error: BaseException | None, reason: str, attempts: int
    ) -> bool:
        """Dead-letter ``items`` (or count them as dropped); True if dead-lettered."""
        count = len(items)
        if not count:
            return True
        letter = self.dead_letter
        kept = (
            letter.write(items, error=error, reason=reason, attempts=attempts)
            if letter is not None
            else False
        )
        queue = self._queue
        with queue.lock:
            if kept:
                self._dead_lettered += count
            else:
                queue.dropped["undeliverable"] += count
            queue.release_locked(count)
        what = type(error).__name__ if error is not None else "not written by the deadline"
        if kept and letter is not None:
            _log.error(
                "batcher %r: %d item(s) dead-lettered to %s (%s, after %d attempt(s): %s)",
                self.name, count, letter.path, reason, attempts, what,
            )  # fmt: skip
        elif letter is None:
            _log.error(
                "batcher %r: %d item(s) lost (%s, after %d attempt(s): %s); set "
                "batchers.%s.dead_letter.path to keep them",
                self.name, count, reason, attempts, what, self.name,
            )  # fmt: skip
        return kept

    def _oldest_unresolved_locked(self) -> float:
        oldest: float = min(self._in_flight, default=math.inf)
        if self._queue.chunks:
            oldest = min(oldest, self._queue.chunks[0].seq)
        return oldest

    def _notify_flushed(self, *, final: bool = False) -> None:
        if not self._flush_waiters:
            return
        with self._queue.lock:
            oldest = math.inf if final else self._oldest_unresolved_locked()
        keep = []
        for target, waiter in self._flush_waiters:
            if target < oldest:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                keep.append((target, waiter))
        self._flush_waiters = keep


class _FlushOutcome:
    """Counts one flush's items as delivery resolves them (implements DeliveryListener)."""

    __slots__ = ("batcher", "error_type", "events", "failed_count", "span", "written_count")

    def __init__(self, batcher: Batcher, span: Span) -> None:
        self.batcher = batcher
        self.span = span
        self.written_count = 0
        self.failed_count = 0
        self.events = 0
        self.error_type: str | None = None

    def written(self, items: Sequence[Any]) -> None:
        count = len(items)
        batcher = self.batcher
        queue = batcher._queue
        with queue.lock:
            batcher._written += count
            queue.release_locked(count)
        self.written_count += count

    def retried(self, items: Sequence[Any], error: BaseException, delay: float) -> None:
        batcher = self.batcher
        with batcher._queue.lock:
            batcher._retried += len(items)
        self.events += 1
        with contextlib.suppress(Exception):  # telemetry never breaks delivery
            BatchTelemetry.retry_event(self.span, self.events, len(items), error, delay)
        if delay and self.events == 1:
            first_line = redact_text(str(error)).split("\n", 1)[0][:300]
            _log.warning(
                "batcher %r: writing %d item(s) failed (%s: %s); retrying in %.3gs, "
                "up to %d attempts",
                batcher.name, len(items), type(error).__name__, first_line, delay,
                batcher.backoff.attempts,
            )  # fmt: skip

    def failed(
        self, items: Sequence[Any], error: BaseException | None, reason: str, attempts: int
    ) -> None:
        self.batcher._fail(items, error, reason, attempts)
        self.failed_count += len(items)
        if self.error_type is None:
            self.error_type = "shutdown" if error is None else error_type(error)
