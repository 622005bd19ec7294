"""The Batcher itself: sync and async producers, lifecycle, retries, shutdown deadline,
dead letters and its telemetry (sinks here are small real ones: lists and files)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otelperf._component import Component, ComponentTelemetry
from otelperf.batch import (
    Backoff,
    Batcher,
    BatcherClosedError,
    BatcherError,
    BatcherFullError,
    JsonlFileSink,
)
from otelperf.testing import CapturedTelemetry
from tests.batch.conftest import assert_accounted, read_dead_letters, wait_until

FOREVER = 3600.0


class ListSink:
    """Keeps every batch written; fails the next ``failures`` writes with ``error``."""

    kind = "list"

    def __init__(self, failures: int = 0, error: BaseException | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.failures = failures
        self.error = error or ConnectionError("sink unavailable")
        self.attempts: list[float] = []
        self.active = 0
        self.most_active = 0
        self.gate: asyncio.Event | None = None

    @property
    def items(self) -> list[Any]:
        return [item for batch in self.batches for item in batch]

    async def write(self, items: list[Any]) -> None:
        self.attempts.append(time.monotonic())
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.failures:
                self.failures -= 1
                raise self.error
            if any(item == "poison" for item in items):
                raise ValueError("poison in the batch")
            self.batches.append(list(items))
        finally:
            self.active -= 1


def test_batcher_is_a_component() -> None:
    """A Batcher satisfies the contract Perf uses to start and stop resources."""
    assert isinstance(Batcher("b", ListSink()), Component)


def test_put_sync_from_many_threads(tmp_path: Path, telemetry: ComponentTelemetry) -> None:
    """Threads calling put_sync concurrently lose nothing and duplicate nothing."""
    out = tmp_path / "out.jsonl"
    threads, each = 4, 5000

    async def main() -> None:
        batcher = Batcher("events", JsonlFileSink(out), max_size=100, max_wait=0.05)
        await batcher.start(telemetry)

        def produce(worker: int) -> None:
            for i in range(each):
                assert batcher.put_sync({"w": worker, "i": i}) is True

        await asyncio.gather(*(asyncio.to_thread(produce, w) for w in range(threads)))
        await batcher.stop()
        stats = assert_accounted(batcher, threads * each)
        assert stats.written == threads * each

    asyncio.run(main())
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == threads * each
    assert {(d["w"], d["i"]) for d in lines} == {
        (w, i) for w in range(threads) for i in range(each)
    }
    for worker in range(threads):  # one producer's items keep their order
        assert [d["i"] for d in lines if d["w"] == worker] == list(range(each))


def test_loop_and_threads_producing_together(tmp_path: Path, telemetry: ComponentTelemetry) -> None:
    """The loop's own puts (lock-free while alone) and threads joining midway lose and
    duplicate nothing: the switch to locking happens between two loop steps."""
    out = tmp_path / "out.jsonl"
    per_producer = 20_000

    async def main() -> None:
        batcher = Batcher("events", JsonlFileSink(out), max_size=64, max_wait=0.01)
        await batcher.start(telemetry)
        assert batcher._queue.shared is False  # only the loop has produced so far

        async def loop_producer() -> None:
            for i in range(per_producer):
                assert await batcher.put({"p": "loop", "i": i}) is True
                if i % 97 == 0:
                    await asyncio.sleep(0)  # let the threads' switch request in

        def thread_producer(name: str) -> None:
            for i in range(per_producer):
                assert batcher.put_sync({"p": name, "i": i}) is True

        await asyncio.gather(
            loop_producer(),
            asyncio.to_thread(thread_producer, "t1"),
            asyncio.to_thread(thread_producer, "t2"),
        )
        assert batcher._queue.shared is True
        await batcher.stop()
        assert assert_accounted(batcher, 3 * per_producer).written == 3 * per_producer

    asyncio.run(main())
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    for producer in ("loop", "t1", "t2"):
        assert [d["i"] for d in seen if d["p"] == producer] == list(range(per_producer))


def test_put_sync_blocks_in_a_thread_until_there_is_room(telemetry: ComponentTelemetry) -> None:
    """on_full block: a thread's put_sync waits for room; on the loop's own thread it refuses
    at once instead of stalling the flushes."""
    sink = ListSink()

    async def main() -> None:
        sink.gate = asyncio.Event()
        batcher = Batcher(
            "events", sink, max_size=2, max_queue=4, max_wait=FOREVER, block_timeout=10
        )
        await batcher.start(telemetry)
        for i in range(4):
            batcher.put_sync(i)
        with pytest.raises(BatcherFullError, match="event loop's thread"):
            batcher.put_sync("loop")
        blocked = asyncio.ensure_future(asyncio.to_thread(batcher.put_sync, 4))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        sink.gate.set()
        assert await asyncio.wait_for(blocked, 10) is True
        await batcher.stop()
        stats = assert_accounted(batcher, 6)
        assert stats.dropped_by_reason["queue_full"] == 1

    asyncio.run(main())
    assert sink.items == [0, 1, 2, 3, 4]


def test_put_sync_times_out_in_a_thread(telemetry: ComponentTelemetry) -> None:
    """A thread blocked past block_timeout gets BatcherFullError; the item is counted dropped."""

    async def main() -> None:
        sink = ListSink()
        sink.gate = asyncio.Event()
        batcher = Batcher("events", sink, max_size=2, max_queue=2, block_timeout=0.2)
        await batcher.start(telemetry)
        await batcher.put(1)
        await batcher.put(2)
        started = time.monotonic()
        with pytest.raises(BatcherFullError, match=r"block_timeout=0\.2s"):
            await asyncio.to_thread(batcher.put_sync, 3)
        assert time.monotonic() - started >= 0.2
        sink.gate.set()
        await batcher.stop()
        assert assert_accounted(batcher, 3).dropped == 1

    asyncio.run(main())


def test_put_waiting_is_cancelled_cleanly(telemetry: ComponentTelemetry) -> None:
    """A put cancelled while waiting for room queues nothing and is counted, once."""

    async def main() -> None:
        sink = ListSink()
        sink.gate = asyncio.Event()
        batcher = Batcher("events", sink, max_size=1, max_queue=1, block_timeout=30)
        await batcher.start(telemetry)
        await batcher.put(1)
        waiting = asyncio.ensure_future(batcher.put(2))
        await asyncio.sleep(0.02)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        sink.gate.set()
        await batcher.stop()
        stats = assert_accounted(batcher, 2)
        assert (stats.written, stats.dropped) == (1, 1)

    asyncio.run(main())


def test_put_after_stop_is_refused_and_counted(telemetry: ComponentTelemetry) -> None:
    """After stop(), put and put_sync raise BatcherClosedError; each refusal is counted."""

    async def main() -> None:
        batcher = Batcher("events", ListSink())
        await batcher.start(telemetry)
        await batcher.put(1)
        await batcher.stop()
        with pytest.raises(BatcherClosedError, match="'events' is stopped"):
            await batcher.put(2)
        with pytest.raises(BatcherClosedError):
            batcher.put_sync(3)
        stats = assert_accounted(batcher, 3)
        assert stats.dropped_by_reason["closed"] == 2
        await batcher.stop()  # idempotent

    asyncio.run(main())


def test_restart_after_stop(telemetry: ComponentTelemetry) -> None:
    """A stopped batcher can be started again and keeps counting."""
    sink = ListSink()

    async def main() -> None:
        batcher = Batcher("events", sink)
        await batcher.start(telemetry)
        await batcher.put(1)
        await batcher.stop()
        await batcher.start(telemetry)
        await batcher.put(2)
        await batcher.flush()
        assert batcher.running
        await batcher.stop()
        assert not batcher.running
        assert_accounted(batcher, 2)

    asyncio.run(main())
    assert sink.items == [1, 2]


def test_items_put_before_start_are_kept(tmp_path: Path, telemetry: ComponentTelemetry) -> None:
    """Items put before start() are written once it starts; a batcher stopped without ever
    starting dead-letters what it holds."""
    sink = ListSink()
    dead = tmp_path / "dlq.jsonl"

    async def main() -> None:
        early = Batcher("events", sink)
        await early.put("a")
        early.put_sync("b")
        await early.start(telemetry)
        await early.flush()
        await early.stop()
        never = Batcher("never", ListSink(), dead_letter=dead)
        await never.put("c")
        with pytest.raises(BatcherError, match="not started"):
            await never.flush()
        await never.stop()
        assert assert_accounted(never, 1).dead_lettered == 1

    asyncio.run(main())
    assert sink.items == ["a", "b"]
    assert [(r["item"], r["reason"]) for r in read_dead_letters(dead)] == [("c", "shutdown")]


def test_retries_with_backoff_then_success(telemetry: ComponentTelemetry) -> None:
    """A sink failing twice is retried after growing delays and the batch written once."""
    sink = ListSink(failures=2)

    async def main() -> None:
        backoff = Backoff(attempts=5, base=0.05, max_delay=1.0, jitter=False)
        batcher = Batcher("events", sink, max_size=3, retry=backoff)
        await batcher.start(telemetry)
        for i in range(3):
            await batcher.put(i)
        await batcher.flush()
        stats = assert_accounted(batcher, 3)
        assert (stats.written, stats.retried, stats.dead_lettered) == (3, 6, 0)
        await batcher.stop()

    asyncio.run(main())
    assert sink.batches == [[0, 1, 2]]
    first, second, third = sink.attempts
    assert second - first >= 0.05
    assert third - second >= 0.1


def test_retries_exhausted_go_to_the_dead_letter_file(
    tmp_path: Path, telemetry: ComponentTelemetry, captured: CapturedTelemetry
) -> None:
    """A batch failing every attempt is dead-lettered with its error and attempt count."""
    dead = tmp_path / "dlq.jsonl"
    sink = ListSink(failures=100, error=ConnectionError("password=hunter2 refused"))

    async def main() -> None:
        batcher = Batcher(
            "events", sink, max_size=2, dead_letter=dead,
            retry=Backoff(attempts=3, base=0.001, max_delay=0.001),
        )  # fmt: skip
        await batcher.start(telemetry)
        await batcher.put({"n": 1})
        await batcher.put({"n": 2})
        await batcher.flush()
        stats = assert_accounted(batcher, 2)
        assert (stats.dead_lettered, stats.retried) == (2, 4)
        await batcher.stop()

    asyncio.run(main())
    records = read_dead_letters(dead)
    assert [r["item"] for r in records] == [{"n": 1}, {"n": 2}]
    assert {r["reason"] for r in records} == {"retries_exhausted"}
    assert {r["attempts"] for r in records} == {3}
    assert {r["error_type"] for r in records} == {"builtins.ConnectionError"}
    assert records[0]["error"] == "ConnectionError: password=**** refused"  # secrets masked
    (span,) = captured.spans("flush events")
    assert dict(span.attributes or {})["error.type"] == "ConnectionError"
    assert [e.name for e in span.events] == ["otelperf.batch.retry"] * 2


def test_without_dead_letter_file_failures_are_counted_and_logged(
    telemetry: ComponentTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """No dead-letter file: failed items are counted dropped (undeliverable) and logged."""

    async def main() -> None:
        sink = ListSink()
        batcher = Batcher("events", sink, max_size=3)
        await batcher.start(telemetry)
        for item in ("a", "poison", "b"):
            await batcher.put(item)
        await batcher.stop()
        stats = assert_accounted(batcher, 3)
        assert (stats.written, stats.dropped_by_reason["undeliverable"]) == (2, 1)
        assert sink.items == ["a", "b"]

    with caplog.at_level(logging.ERROR, logger="otelperf.batch"):
        asyncio.run(main())
    assert "1 item(s) lost (rejected" in caplog.text
    assert "batchers.events.dead_letter.path" in caplog.text


def test_dead_letter_file_that_cannot_be_written(telemetry: ComponentTelemetry) -> None:
    """A dead-letter file that refuses writes (a full disk) costs a count, not an exception."""

    async def main() -> None:
        batcher = Batcher("events", ListSink(), max_size=1, dead_letter="/dev/full")
        await batcher.start(telemetry)
        await batcher.put("poison")
        await batcher.put("fine")
        await batcher.stop()
        stats = assert_accounted(batcher, 2)
        assert (stats.written, stats.dropped_by_reason["undeliverable"]) == (1, 1)

    asyncio.run(main())


def test_unwritable_dead_letter_path_fails_the_start(
    tmp_path: Path, telemetry: ComponentTelemetry
) -> None:
    """A dead-letter path that cannot be opened fails start() with the path and the key."""
    path = tmp_path / "missing-dir" / "dlq.jsonl"

    async def main() -> None:
        batcher = Batcher("events", ListSink(), dead_letter=path)
        with pytest.raises(BatcherError, match=r"dead-letter file .*missing-dir") as caught:
            await batcher.start(telemetry)
        assert "batchers.events.dead_letter.path" in str(caught.value)

    asyncio.run(main())


def test_shutdown_deadline_dead_letters_a_stuck_write(
    tmp_path: Path, telemetry: ComponentTelemetry
) -> None:
    """stop() returns by shutdown_deadline with the sink hung: the batch being written and
    those queued are dead-lettered (reason shutdown), in order."""
    dead = tmp_path / "dlq.jsonl"

    async def main() -> float:
        sink = ListSink()
        sink.gate = asyncio.Event()  # never set: the write hangs
        batcher = Batcher(
            "events", sink, max_size=10, dead_letter=dead, shutdown_deadline=0.3,
            write_timeout=None,
        )  # fmt: skip
        await batcher.start(telemetry)
        for i in range(35):
            await batcher.put(i)
        await wait_until(lambda: sink.active == 1, what="a stuck write")
        started = time.monotonic()
        await batcher.stop()
        elapsed = time.monotonic() - started
        stats = assert_accounted(batcher, 35)
        assert (stats.written, stats.dead_lettered) == (0, 35)
        return elapsed

    elapsed = asyncio.run(main())
    assert 0.3 <= elapsed < 2.0
    records = read_dead_letters(dead)
    assert [r["item"] for r in records] == list(range(35))
    assert {r["reason"] for r in records} == {"shutdown"}


def test_write_timeout_fails_the_attempt(tmp_path: Path, telemetry: ComponentTelemetry) -> None:
    """A write slower than write_timeout counts as a failed attempt and is retried."""
    dead = tmp_path / "dlq.jsonl"

    async def main() -> None:
        sink = ListSink()
        sink.gate = asyncio.Event()
        batcher = Batcher(
            "events", sink, max_size=1, dead_letter=dead, write_timeout=0.05,
            retry=Backoff(attempts=2, base=0.01, max_delay=0.01),
        )  # fmt: skip
        await batcher.start(telemetry)
        await batcher.put("slow")
        await batcher.flush()
        assert len(sink.attempts) == 2
        assert assert_accounted(batcher, 1).dead_lettered == 1
        await batcher.stop()

    asyncio.run(main())
    (record,) = read_dead_letters(dead)
    assert record["error_type"] == "builtins.TimeoutError"
    assert record["reason"] == "retries_exhausted"


def test_concurrency_allows_parallel_flushes(telemetry: ComponentTelemetry) -> None:
    """concurrency=3 writes up to three batches at once; the default writes one at a time."""

    async def run(concurrency: int) -> int:
        sink = ListSink()
        sink.gate = asyncio.Event()
        batcher = Batcher("events", sink, max_size=2, concurrency=concurrency)
        await batcher.start(telemetry)
        for i in range(20):
            await batcher.put(i)
        await wait_until(lambda: sink.active == concurrency, what="flushes in flight")
        await asyncio.sleep(0.05)  # give a fourth flush the chance to start, wrongly
        assert sink.active == concurrency
        sink.gate.set()
        await batcher.stop()
        assert sorted(sink.items) == list(range(20))
        if concurrency == 1:
            assert sink.items == list(range(20))  # order kept
        assert_accounted(batcher, 20)
        return sink.most_active

    assert asyncio.run(run(1)) == 1
    assert asyncio.run(run(3)) == 3


def test_flush_waits_only_for_earlier_items(telemetry: ComponentTelemetry) -> None:
    """flush() sends partial batches now and returns once they are written."""
    sink = ListSink()

    async def main() -> None:
        batcher = Batcher("events", sink, max_size=100, max_wait=FOREVER)
        await batcher.start(telemetry)
        await batcher.put(1)
        await batcher.flush()
        assert sink.items == [1]
        await batcher.flush()  # nothing pending: returns at once
        await batcher.stop()

    asyncio.run(main())


def test_readiness(telemetry: ComponentTelemetry) -> None:
    """Ready while running with room; not ready when full, nor once stopped."""

    async def main() -> None:
        sink = ListSink()
        sink.gate = asyncio.Event()
        batcher = Batcher("events", sink, max_size=1, max_queue=2)
        check = batcher.readiness_check()
        assert check is not None
        assert await check() is False  # not started
        await batcher.start(telemetry)
        assert await check() is True
        await batcher.put(1)
        await batcher.put(2)
        assert await check() is False
        sink.gate.set()
        await batcher.flush()
        assert await check() is True
        await batcher.stop()
        assert await check() is False

    asyncio.run(main())


def test_flush_span_links_to_enqueuing_spans(
    telemetry: ComponentTelemetry, captured: CapturedTelemetry
) -> None:
    """The flush span is a root span linked to the spans that put its items, looked up on
    items spread through the batch, each span once, at most max_links of them."""
    tracer = captured.perf.tracer

    async def main() -> None:
        batcher = Batcher("events", ListSink(), max_size=12, max_links=3, max_wait=FOREVER)
        await batcher.start(telemetry)
        with tracer.start_as_current_span("parent of the puts"):
            for request in range(6):
                with tracer.start_as_current_span(f"request {request}"):
                    for i in range(2):
                        await batcher.put((request, i))
        await batcher.put("outside any span")
        await batcher.stop()

    asyncio.run(main())
    requests = {s.name: s.context for s in captured.spans() if s.name.startswith("request")}
    first, second = captured.spans("flush events")
    assert first.parent is None  # a root: the puts' spans are links, not parents
    attributes = dict(first.attributes or {})
    assert attributes["otelperf.batch.size"] == 12
    assert attributes["otelperf.batch.name"] == "events"
    assert attributes["otelperf.batch.sink"] == "list"
    linked = [link.context.span_id for link in first.links]
    # Looked up on items 1, 5 and 9: requests 0, 2 and 4; then the cap is reached.
    assert linked == [requests[f"request {i}"].span_id for i in (0, 2, 4)]
    assert second.links == ()  # its only item was put outside any span


def test_metrics(
    tmp_path: Path, telemetry: ComponentTelemetry, captured: CapturedTelemetry
) -> None:
    """Queue size and limit, batch sizes, flush durations and items by outcome are reported."""

    async def main() -> None:
        batcher = Batcher(
            "events", ListSink(), max_size=4, max_queue=8, on_full="drop_newest",
            dead_letter=tmp_path / "dlq.jsonl", max_wait=FOREVER,
        )  # fmt: skip
        await batcher.start(telemetry)
        for item in ["a", "poison", "b", "c", "d", "e"]:
            await batcher.put(item)
        await batcher.flush()
        for i in range(10):  # 8 fit, 2 dropped
            await batcher.put(i)
        size = captured.points("otelperf.batch.queue.size", **{"otelperf.batch.name": "events"})
        assert [p.value for p in size] == [8]
        limit = captured.points("otelperf.batch.queue.limit")
        assert [p.value for p in limit] == [8]
        await batcher.stop()

    asyncio.run(main())

    def items(outcome: str, **extra: str) -> int:
        attrs = {"otelperf.batch.outcome": outcome, "otelperf.batch.name": "events", **extra}
        (point,) = captured.points("otelperf.batch.items", **attrs)
        return int(point.value)

    assert items("written") == 13
    assert items("dead_lettered") == 1
    assert items("retried") > 0
    assert items("dropped", **{"otelperf.batch.drop.reason": "queue_full"}) == 2
    sizes = captured.points("otelperf.batch.size", **{"otelperf.batch.sink": "list"})
    assert sum(p.count for p in sizes) == 4
    assert sum(p.sum for p in sizes) == 14
    failed = captured.points("otelperf.batch.flush.duration", **{"error.type": "ValueError"})
    assert sum(p.count for p in failed) == 1
    all_durations = captured.points("otelperf.batch.flush.duration")
    assert sum(p.count for p in all_durations) == 4


def test_two_batchers_on_one_meter_both_report() -> None:
    """Each batcher started on the same meter reports its own counts (the SDK keeps only the
    first callback of an observable instrument)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    from opentelemetry.trace import NoOpTracer

    telemetry = ComponentTelemetry(NoOpTracer(), provider.get_meter("test"))

    async def main() -> tuple[Batcher, Batcher]:
        first, second = Batcher("first", ListSink()), Batcher("second", ListSink())
        await first.start(telemetry)
        await second.start(telemetry)
        await first.put(1)
        for i in range(3):
            await second.put(i)
        await first.stop()
        await second.stop()
        return first, second

    try:
        # Held until collected: the meter's callback reports the batchers that still exist.
        batchers = asyncio.run(main())
        data: Any = reader.get_metrics_data()
        del batchers
        written = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "otelperf.batch.items":
                        for p in metric.data.data_points:
                            if p.attributes["otelperf.batch.outcome"] == "written":
                                written[p.attributes["otelperf.batch.name"]] = p.value
        assert written == {"first": 1, "second": 3}
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_size": 0}, "max_size must be at least 1"),
        ({"max_size": 10, "max_queue": 5}, r"max_queue \(5\) must be greater or equal"),
        ({"on_full": "wait"}, "on_full must be one of block, drop_oldest"),
        ({"max_wait": 0}, "max_wait must be positive"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any], message: str) -> None:
    """Impossible options fail at construction with a message naming the batcher."""
    with pytest.raises(BatcherError, match=message) as caught:
        Batcher("events", ListSink(), **options)
    assert "batcher 'events'" in str(caught.value)


def test_a_sink_without_write_is_refused() -> None:
    """An object with no write method is not accepted as a sink."""
    with pytest.raises(BatcherError, match="has no write"):
        Batcher("events", object())  # type: ignore[arg-type]


def test_put_from_another_threads_event_loop(telemetry: ComponentTelemetry) -> None:
    """await put() on another thread's event loop works, blocking there when full."""
    sink = ListSink()

    async def main() -> None:
        sink.gate = asyncio.Event()
        batcher = Batcher("events", sink, max_size=1, max_queue=1, block_timeout=10)
        await batcher.start(telemetry)
        await batcher.put("first")

        def other_thread() -> bool:
            return asyncio.run(batcher.put("second"))

        waiting = asyncio.ensure_future(asyncio.to_thread(other_thread))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        sink.gate.set()
        assert await asyncio.wait_for(waiting, 10) is True
        await batcher.stop()

    asyncio.run(main())
    assert sink.items == ["first", "second"]


def test_put_does_not_wait_on_the_sink(telemetry: ComponentTelemetry) -> None:
    """With room in the queue, put returns without yielding, whatever the sink is doing."""

    async def main() -> None:
        sink = ListSink()
        sink.gate = asyncio.Event()
        batcher = Batcher("events", sink, max_size=2, max_queue=100)
        await batcher.start(telemetry)
        for i in range(50):
            coro = batcher.put(i)
            with pytest.raises(StopIteration):
                coro.send(None)  # completes on its first step: no suspension
        sink.gate.set()
        await batcher.stop()
        assert batcher.stats().written == 50

    asyncio.run(main())


def test_logs_a_warning_on_the_first_retry(
    telemetry: ComponentTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing sink is logged once per flush, with the error and the retry plan."""

    async def main() -> None:
        batcher = Batcher(
            "events", ListSink(failures=3), max_size=1,
            retry=Backoff(attempts=5, base=0.001, max_delay=0.001),
        )  # fmt: skip
        await batcher.start(telemetry)
        await batcher.put(1)
        await batcher.stop()

    with caplog.at_level(logging.WARNING, logger="otelperf.batch"):
        asyncio.run(main())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ConnectionError: sink unavailable" in warnings[0].getMessage()


def test_thread_waiting_when_stopped_gets_closed(telemetry: ComponentTelemetry) -> None:
    """A thread blocked in put_sync when the batcher stops is released with BatcherClosedError."""
    errors: list[BaseException] = []

    async def main() -> None:
        sink = ListSink()
        sink.gate = asyncio.Event()
        batcher = Batcher(
            "events", sink, max_size=1, max_queue=1, block_timeout=30, shutdown_deadline=0.2,
        )  # fmt: skip
        await batcher.start(telemetry)
        await batcher.put(1)
        entered = threading.Event()

        def blocked() -> None:
            entered.set()
            try:
                batcher.put_sync(2)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=blocked)
        thread.start()
        await asyncio.to_thread(entered.wait)
        await wait_until(lambda: batcher._queue.thread_waiters == 1, what="the thread waiting")
        await batcher.stop()
        await asyncio.to_thread(thread.join, 10)
        assert_accounted(batcher, 2)

    asyncio.run(main())
    assert len(errors) == 1
    assert isinstance(errors[0], BatcherClosedError)
