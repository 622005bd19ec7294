"""Profiles on disk: rotation by count and by size, failures counted, shutdown flushes."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from otelperf._component import ComponentTelemetry
from otelperf._errors import OtelperfError
from otelperf.config import load_config
from otelperf.profiling import Profiling
from otelperf.profiling._engines import Captured
from otelperf.profiling._store import ProfileStore, SaveJob, new_id, valid_file_name
from otelperf.testing import asgi_request, capture
from tests.profiling.harness import Rig, crunch_numbers, rig


def _hit(r: Rig, path: str, times: int) -> None:
    async def main() -> None:
        for _ in range(times):
            assert (await asgi_request(r.app, "GET", path)).status == 200

    asyncio.run(main())


def test_rotation_keeps_exactly_n_per_hook(tmp_path: Path) -> None:
    """With keep: 3, five profiles leave exactly the newest three, files and all."""
    with rig(tmp_path, {"hooks": [{"name": "fast", "route": "/fast", "keep": 3}]}) as r:
        _hit(r, "/fast", 5)
        ids = r.profile_ids()
        events = [e["otelperf.profile.id"] for e in r.events()]
        assert len(events) == 5
        assert ids == sorted(events)[-3:]
        assert len(list(r.directory.iterdir())) == 3 * 3  # html, speedscope.json, json
        assert r.count("kept", "fast") == 5


def test_rotation_counts_each_hook_on_its_own(tmp_path: Path) -> None:
    """One hook's profiles never push out another's."""
    hooks = [
        {"name": "fast", "route": "/fast", "keep": 1},
        {"name": "items", "route": "/items/*", "keep": 2},
    ]
    with rig(tmp_path, {"hooks": hooks}) as r:
        _hit(r, "/items/1", 3)
        _hit(r, "/fast", 3)
        hooks_on_disk = sorted(r.meta(i)["hook"] for i in r.profile_ids())
        assert hooks_on_disk == ["fast", "items", "items"]


def test_rotation_by_total_size_deletes_oldest_first(tmp_path: Path) -> None:
    """Beyond max_total_size the oldest profiles go; the newest is kept even if alone too big."""
    with rig(tmp_path, {"max_total_size": "1KiB", "hooks": [{"route": "/fast"}]}) as r:
        _hit(r, "/fast", 3)
        newest = sorted(e["otelperf.profile.id"] for e in r.events())[-1]
        assert r.profile_ids() == [newest]
        assert sum(p.stat().st_size for p in r.directory.iterdir()) > 1024


class _FixedSize:
    """Stands in for a captured profile: one 10 kB file."""

    engine = "pyinstrument"

    def write(self, describe: str, write_file: Callable[[str, bytes], None]) -> None:
        write_file("html", b"x" * 10_000)


def test_rotation_by_size_keeps_what_fits(tmp_path: Path) -> None:
    """A budget of two and a half profiles keeps exactly the newest two of four."""
    store = ProfileStore(str(tmp_path), max_total_size=25_000, keep={"h": 100})
    store.open()
    ids = []
    try:
        for _ in range(4):
            ids.append(new_id("h"))
            job = SaveJob(ids[-1], "h", "t", {"id": ids[-1]}, cast(Captured, _FixedSize()))
            assert store.submit(job, lambda ok: None)
            assert store.flush(10)
    finally:
        store.close()
    assert [meta["id"] for meta in store.profiles()] == [ids[3], ids[2]]  # newest first
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(f"{i}.{ext}" for i in ids[-2:] for ext in ("html", "json"))


def test_rotation_spares_foreign_files_and_removes_stale_orphans(tmp_path: Path) -> None:
    """Only otelperf's own files are touched: stale partial profiles go, other files stay."""
    directory = tmp_path / "profiles"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    orphan = directory / f"{new_id('old')}.html"
    orphan.write_text("partial")
    stale = time.time() - 3600
    os.utime(orphan, (stale, stale))
    fresh = directory / f"{new_id('writing')}.html"
    fresh.write_text("being written by another process")
    with rig(tmp_path, {"hooks": [{"route": "/fast"}]}) as r:
        _hit(r, "/fast", 1)
        assert len(r.profile_ids()) == 1
    assert (directory / "notes.txt").exists()
    assert fresh.exists()
    assert not orphan.exists()


def test_unwritable_profile_is_counted_failed_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A profile that cannot be written counts as failed, logs once, and the request succeeds."""
    with rig(tmp_path, {"hooks": [{"route": "/fast"}]}) as r:
        shutil.rmtree(r.directory)
        r.directory.write_text("a file where the directory was")
        with caplog.at_level(logging.WARNING, logger="otelperf.profiling"):
            _hit(r, "/fast", 2)
            r.profiling.flush(10)
        assert r.count("failed", "/fast") == 2
        assert r.count("kept") == 0
        warnings = [rec for rec in caplog.records if "could not be written" in rec.getMessage()]
        assert len(warnings) == 1  # rate-limited


def test_close_writes_every_queued_profile(tmp_path: Path) -> None:
    """Profiles queued when the component closes are on disk once close returns."""
    with rig(tmp_path, {"hooks": [{"route": "/fast"}]}) as r:
        _hit(r, "/fast", 3)
        r.profiling.close()  # no flush before: close must drain the writer
        names = [p.name for p in r.directory.iterdir() if p.name.endswith(".html")]
        assert len(names) == 3


def test_async_stop_drains_the_writer(tmp_path: Path) -> None:
    """``await stop()`` (the lifespan shutdown) also waits for queued profiles."""
    with rig(tmp_path, {"hooks": [{"route": "/fast"}]}) as r:

        async def main() -> None:
            await asgi_request(r.app, "GET", "/fast")
            await r.profiling.stop()

        asyncio.run(main())
        assert len([p for p in r.directory.iterdir() if p.name.endswith(".html")]) == 1
        assert not r.profiling.started


def test_output_dir_that_cannot_be_created_fails_ping_and_startup(tmp_path: Path) -> None:
    """A blocked output_dir fails ping (creating nothing) and startup, naming the directory."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    config = load_config(
        {
            "version": 1,
            "service": {"name": "x"},
            "profiling": {"output_dir": str(blocker / "profiles"), "hooks": [{"route": "/x"}]},
        }
    )
    profiling = Profiling(config.profiling)
    with pytest.raises(OtelperfError, match=r"profiling\.output_dir .*blocker/profiles"):
        asyncio.run(profiling.ping())
    with (
        capture() as telemetry,
        pytest.raises(OtelperfError, match=r"profiling\.output_dir .*blocker/profiles"),
    ):
        profiling.open(ComponentTelemetry(telemetry.perf.tracer, telemetry.perf.meter))
    assert not profiling.started


def test_ping_creates_nothing(tmp_path: Path) -> None:
    """ping() on a creatable output_dir passes without creating it."""
    config = load_config(
        {
            "version": 1,
            "service": {"name": "x"},
            "profiling": {"output_dir": str(tmp_path / "a" / "b"), "hooks": [{"route": "/x"}]},
        }
    )
    asyncio.run(Profiling(config.profiling).ping())
    assert not (tmp_path / "a").exists()


def test_forked_child_writes_its_own_profiles(tmp_path: Path) -> None:
    """Started before a fork, the component profiles and writes in the child after open()."""
    with rig(tmp_path, {"hooks": [{"name": "work"}]}) as r:
        work = r.profiling.profile("work")(crunch_numbers)
        work(0.01)
        assert len(r.profile_ids()) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            code = 1
            try:
                r.profiling.open(
                    ComponentTelemetry(r.telemetry.perf.tracer, r.telemetry.perf.meter)
                )
                work(0.01)
                code = 0 if r.profiling.flush(10) and len(r.profile_ids()) == 2 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert len(r.profile_ids()) == 2


def test_store_refuses_work_beyond_its_queue(tmp_path: Path) -> None:
    """A closed store, or one with max_pending queued, accepts nothing more."""
    store = ProfileStore(str(tmp_path), max_total_size=1 << 20, keep={}, max_pending=0)
    store.open()
    try:
        assert store.submit(object(), lambda ok: None) is False  # type: ignore[arg-type]
    finally:
        store.close()
    assert store.submit(object(), lambda ok: None) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "x.json", f"{new_id('a')}.exe", f"{new_id('a')}.json/../x", ".hidden.json"],
)
def test_only_profile_file_names_are_valid(name: str) -> None:
    """Names that are not ``<id>.<known extension>`` are refused."""
    assert not valid_file_name(name)


def test_profile_ids_sort_by_time_and_carry_the_hook() -> None:
    """Ids sort in creation order and name the hook, filesystem-safe."""
    first = new_id("/reports/*")
    time.sleep(0.001)
    second = new_id("/reports/*")
    assert first < second
    assert "-reports-" in first
    assert "/" not in first
    assert valid_file_name(f"{first}.speedscope.json")
