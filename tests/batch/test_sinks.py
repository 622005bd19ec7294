"""The callable and jsonl sinks, batchers built from config, retries and dead-letter records."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from otelperf._component import ComponentTelemetry
from otelperf._errors import ConfigError, MissingDependencyError
from otelperf.batch import (
    Backoff,
    Batcher,
    BatcherError,
    FunctionSink,
    JsonlFileSink,
    PostgresCopySink,
    build_batcher,
)
from otelperf.batch._retry import deliver
from otelperf.config import load_config
from tests.batch import sink_targets
from tests.batch.conftest import assert_accounted, read_dead_letters


def _config(sink: dict[str, Any], **batcher: Any) -> Any:
    config = load_config(
        {
            "version": 1,
            "service": {"name": "t"},
            "batchers": {"events": {"sink": sink, **batcher}},
        }
    )
    return config.batchers["events"]


@pytest.mark.parametrize(
    ("path", "kind", "off_loop"),
    [
        ("tests.batch.sink_targets:write_sync", "sync", True),
        ("tests.batch.sink_targets:write_async", "async", False),
        ("tests.batch.sink_targets:writer", "object", False),
    ],
)
def test_callable_sink_by_import_path(
    telemetry: ComponentTelemetry, path: str, kind: str, off_loop: bool
) -> None:
    """A function named by import path receives each batch as a list; a sync one runs in a
    worker thread so the event loop keeps serving."""
    sink_targets.received.clear()

    async def main() -> str:
        batcher = build_batcher("events", _config({"callable": {"path": path}}, max_size=2))
        await batcher.start(telemetry)
        for i in range(5):
            await batcher.put(i)
        await batcher.stop()
        assert_accounted(batcher, 5)
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert [(k, batch) for k, batch, _ in sink_targets.received] == [
        (kind, [0, 1]), (kind, [2, 3]), (kind, [4]),
    ]  # fmt: skip
    threads = {thread for _, _, thread in sink_targets.received}
    assert (loop_thread not in threads) is off_loop


def test_sync_callable_item_errors_isolate_the_item(
    tmp_path: Path, telemetry: ComponentTelemetry
) -> None:
    """A ValueError from a sync callable splits the batch: the bad item alone is dead-lettered."""
    sink_targets.received.clear()
    dead = tmp_path / "dlq.jsonl"

    async def main() -> None:
        config = _config(
            {"callable": {"path": "tests.batch.sink_targets:write_sync"}},
            max_size=8, dead_letter={"path": str(dead)},
        )  # fmt: skip
        batcher = build_batcher("events", config)
        await batcher.start(telemetry)
        for item in ["a", "b", "c", "bad", "d", "e", "f", "g"]:
            await batcher.put(item)
        await batcher.stop()

    asyncio.run(main())
    written = [item for _, batch, _ in sink_targets.received for item in batch]
    assert written == ["a", "b", "c", "d", "e", "f", "g"]  # order kept across the split
    (record,) = read_dead_letters(dead)
    assert (record["item"], record["error"]) == ("bad", "ValueError: bad item")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.batch.no_such_module:write", "ModuleNotFoundError"),
        ("tests.batch.sink_targets:missing", "AttributeError"),
        ("tests.batch.sink_targets:not_a_function", "is a int, not a function"),
    ],
)
def test_callable_sink_that_cannot_be_imported(
    telemetry: ComponentTelemetry, path: str, message: str
) -> None:
    """A wrong import path fails the start (not the load) naming the path and the key."""
    batcher = build_batcher("events", _config({"callable": {"path": path}}))

    async def main() -> None:
        with pytest.raises(BatcherError, match=message) as caught:
            await batcher.start(telemetry)
        assert path in str(caught.value)
        assert "batchers.events.sink.callable.path" in str(caught.value)

    asyncio.run(main())


def test_jsonl_sink_encodes_common_types(tmp_path: Path, telemetry: ComponentTelemetry) -> None:
    """Items become one JSON line each (datetimes, UUIDs, decimals, bytes included); an item
    JSON cannot hold is dead-lettered alone (its repr kept) while the rest are written."""
    out, dead = tmp_path / "events.jsonl", tmp_path / "dlq.jsonl"
    when = datetime.datetime(2026, 5, 9, 7, 35, tzinfo=datetime.timezone.utc)
    ident = uuid.UUID(int=7)

    async def main() -> None:
        config = _config(
            {"jsonl": {"path": str(out)}}, max_size=10, dead_letter={"path": str(dead)}
        )
        batcher = build_batcher("events", config)
        await batcher.start(telemetry)
        await batcher.put({"at": when, "id": ident, "price": decimal.Decimal("9.99")})
        await batcher.put({"raw": b"\x00\x01", "tags": ("a", "b"), "text": "été"})
        await batcher.put({"object": object()})
        await batcher.put([1, None, True])
        await batcher.stop()
        stats = assert_accounted(batcher, 4)
        assert (stats.written, stats.dead_lettered) == (3, 1)

    asyncio.run(main())
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {"at": "2026-05-09T07:35:00+00:00", "id": str(ident), "price": "9.99"},
        {"raw": "AAE=", "tags": ["a", "b"], "text": "été"},
        [1, None, True],
    ]
    (record,) = read_dead_letters(dead)
    assert record["item"]["object"]["repr"].startswith("<object object at")
    assert record["error_type"] == "builtins.TypeError"


def test_jsonl_sink_unwritable_path_fails_the_start(
    tmp_path: Path, telemetry: ComponentTelemetry
) -> None:
    """A jsonl path in a missing directory fails the start with the path and the key."""
    batcher = build_batcher("events", _config({"jsonl": {"path": str(tmp_path / "no" / "x")}}))

    async def main() -> None:
        with pytest.raises(BatcherError, match="jsonl sink file") as caught:
            await batcher.start(telemetry)
        assert "batchers.events.sink.jsonl.path" in str(caught.value)

    asyncio.run(main())


def test_build_batcher_maps_every_option(tmp_path: Path) -> None:
    """build_batcher turns each config field into the batcher's runtime option."""
    config = _config(
        {"jsonl": {"path": str(tmp_path / "x.jsonl")}},
        max_size=7, max_wait="250ms", max_queue=70, on_full="drop_oldest", block_timeout="1s",
        concurrency=2, shutdown_deadline="3s", write_timeout=None, max_links=5,
        retry={"attempts": 9, "backoff": "20ms", "max_backoff": "2s", "jitter": False},
        dead_letter={"path": str(tmp_path / "d.jsonl")},
    )  # fmt: skip
    batcher = build_batcher("events", config)
    queue = batcher._queue
    assert (queue.max_size, queue.max_wait, queue.max_queue, queue.on_full) == (
        7, 0.25, 70, "drop_oldest",
    )  # fmt: skip
    assert (batcher.block_timeout, batcher.concurrency, batcher.shutdown_deadline) == (1, 2, 3)
    assert batcher._write_timeout is None
    assert queue.max_links == 5
    assert batcher.backoff == Backoff(attempts=9, base=0.02, max_delay=2.0, jitter=False)
    assert batcher.dead_letter is not None
    assert batcher.dead_letter.path.endswith("d.jsonl")
    assert isinstance(batcher.sink, JsonlFileSink)


def test_build_batcher_postgres_resolves_the_pool_at_start(postgres_dsn: str) -> None:
    """The postgres sink looks its pool up by name when used, not when built."""
    looked_up: list[str] = []
    config = load_config(
        {
            "version": 1,
            "service": {"name": "t"},
            "pools": {"main": {"conninfo": postgres_dsn}},
            "batchers": {
                "events": {"sink": {"postgres": {"pool": "main", "table": "t", "columns": ["a"]}}}
            },
        }
    ).batchers["events"]

    def resolve(name: str) -> Any:
        looked_up.append(name)
        raise KeyError(name)

    batcher = build_batcher("events", config, resolve)
    assert isinstance(batcher.sink, PostgresCopySink)
    assert looked_up == []
    with pytest.raises(BatcherError, match="no pools were given"):
        build_batcher("events", config)


def test_config_refuses_bad_batcher_sections() -> None:
    """The schema refuses a bad on_full, a non-positive write_timeout and two sinks at once."""
    for sink, extra, message in [
        ({"jsonl": {"path": "x"}}, {"on_full": "wait"}, "on_full"),
        ({"jsonl": {"path": "x"}}, {"write_timeout": "0s"}, "write_timeout"),
        ({"jsonl": {"path": "x"}, "callable": {"path": "a:b"}}, {}, "exactly one"),
        ({"jsonl": {"path": ""}}, {}, "jsonl.path"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _config(sink, **extra)


def test_backoff_delays_grow_are_capped_and_jittered() -> None:
    """Delays double from base up to max_delay; jitter draws between half and all of it."""
    exact = Backoff(attempts=10, base=0.1, max_delay=1.0, jitter=False)
    assert [exact.delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    jittered = Backoff(attempts=10, base=0.1, max_delay=1.0, jitter=True)
    draws = [jittered.delay(3) for _ in range(200)]
    assert all(0.2 <= d <= 0.4 for d in draws)
    assert len(set(draws)) > 100
    assert Backoff(base=1.0, max_delay=5.0, jitter=False).delay(10_000) == 5.0
    with pytest.raises(ValueError, match="attempts"):
        Backoff(attempts=0)


def test_deliver_isolates_several_poison_items_in_order() -> None:
    """Bisection finds every poison item of a batch and writes the rest in their order."""
    written: list[list[int]] = []
    failed: list[tuple[list[int], str]] = []

    async def write(items: list[int]) -> None:
        if any(i % 7 == 3 for i in items):
            raise ValueError("poison")
        written.append(items)

    class Listener:
        def written(self, items: Sequence[Any]) -> None:
            pass

        def retried(self, items: Sequence[Any], error: BaseException, delay: float) -> None:
            assert delay == 0

        def failed(
            self, items: Sequence[Any], error: BaseException | None, reason: str, attempts: int
        ) -> None:
            failed.append((list(items), reason))

    asyncio.run(
        deliver(
            list(range(40)),
            write=write,
            is_item_error=lambda e: isinstance(e, ValueError),
            backoff=Backoff(attempts=3, jitter=False),
            deadline=lambda: None,
            listener=Listener(),
        )
    )
    poison = [i for i in range(40) if i % 7 == 3]
    assert failed == [([i], "rejected") for i in poison]
    assert [i for batch in written for i in batch] == [i for i in range(40) if i not in poison]


def test_function_sink_accepts_a_callable(telemetry: ComponentTelemetry) -> None:
    """FunctionSink also takes the function itself."""
    got: list[list[int]] = []

    async def collect(items: list[int]) -> None:
        got.append(items)

    async def main() -> None:
        batcher = Batcher("events", FunctionSink(collect), max_size=3)
        await batcher.start(telemetry)
        for i in range(3):
            await batcher.put(i)
        await batcher.stop()

    asyncio.run(main())
    assert got == [[0, 1, 2]]


def test_postgres_sink_without_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg installed, building a postgres sink names the extra to install."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    config = load_config(
        {
            "version": 1,
            "service": {"name": "t"},
            "pools": {"main": {"conninfo": "postgresql://localhost/db"}},
            "batchers": {
                "events": {"sink": {"postgres": {"pool": "main", "table": "t", "columns": ["a"]}}}
            },
        }
    ).batchers["events"]
    with pytest.raises(MissingDependencyError, match=r'pip install "otelperf\[postgres\]"'):
        build_batcher("events", config, lambda name: None)  # type: ignore[arg-type,return-value]


def test_ping_checks_files_without_creating_them(tmp_path: Path) -> None:
    """ping() (otelperf check --connect) checks the jsonl and dead-letter paths could be
    written, creates neither, and names the one that cannot."""
    out, dead = tmp_path / "events.jsonl", tmp_path / "dlq.jsonl"
    good = _config({"jsonl": {"path": str(out)}}, dead_letter={"path": str(dead)})
    missing = tmp_path / "missing" / "x.jsonl"
    bad_sink = _config({"jsonl": {"path": str(missing)}})
    bad_letter = _config({"jsonl": {"path": str(out)}}, dead_letter={"path": str(tmp_path)})

    async def main() -> None:
        await build_batcher("events", good).ping()
        assert not out.exists()
        assert not dead.exists()
        with pytest.raises(BatcherError, match=r"jsonl sink file .* does not exist"):
            await build_batcher("events", bad_sink).ping()
        with pytest.raises(BatcherError, match=r"dead-letter file .* is a directory"):
            await build_batcher("events", bad_letter).ping()

    asyncio.run(main())
