"""Profiles on disk: written off the event loop, rotated by count per hook and by total size.

One profile is a few files sharing an id, ``<id>.<ext>``: ``speedscope.json`` and
``html`` (pyinstrument) or ``pstats`` (cProfile), and ``json``, its metadata, written
last, so a profile is complete exactly when its metadata exists. Ids start with the
UTC time, so sorting ids sorts profiles by age, across processes too.

Rotation works from the directory, not from memory, so several worker processes
sharing ``output_dir`` keep the limits together: after each write, the oldest
profiles of the same hook beyond its ``keep``, then the oldest of any hook beyond
``max_total_size``, are deleted (never the one just written). Profiles of hooks no
longer configured only count against the size limit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from otelperf._errors import OtelperfError
from otelperf.profiling._engines import Captured

__all__ = ["ProfileStore", "RateLimitedLog", "SaveJob", "new_id", "valid_file_name"]

_log = logging.getLogger("otelperf.profiling")

_ID = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[A-Za-z0-9_-]{1,40}-[0-9a-f]{8}$")
_FILE = re.compile(r"^(?P<id>[A-Za-z0-9_-]+)\.(?P<ext>json|speedscope\.json|html|pstats)$")
_ORPHAN_AGE = 600.0  # seconds before data files without metadata (a crash) are removed
_MAX_LISTED = 1000


def new_id(label: str) -> str:
    """A fresh profile id: UTC time to the microsecond, the hook, 8 random hex digits."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_")[:40] or "profile"
    now = datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%f}Z-{slug}-{secrets.token_hex(4)}"


def valid_file_name(name: str) -> bool:
    """Whether ``name`` is a profile file name (guards the endpoint against path tricks)."""
    found = _FILE.fullmatch(name)
    return found is not None and _ID.fullmatch(found["id"]) is not None


@dataclass(frozen=True)
class SaveJob:
    """A profile to write."""

    id: str
    hook: str
    describe: str
    meta: dict[str, Any]
    captured: Captured


class RateLimitedLog:
    """Logs a warning at most once per ``every`` seconds: failures repeat, logs must not flood."""

    def __init__(self, every: float = 60.0) -> None:
        self._every = every
        self._last = -float("inf")
        self._lock = threading.Lock()

    def _due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._every:
                return False
            self._last = now
            return True

    def warning(self, message: str, *args: object) -> None:
        if self._due():
            _log.warning(message, *args)

    def exception(self, message: str, *args: object) -> None:
        """An unexpected failure, with its traceback (call it from an ``except`` block)."""
        if self._due():
            _log.exception(message, *args)


class ProfileStore:
    """Writes profiles under one directory in a background thread, and lists them."""

    def __init__(
        self,
        directory: str,
        *,
        max_total_size: int,
        keep: Mapping[str, int],
        max_pending: int = 8,
    ) -> None:
        self.directory = Path(directory)
        self._max_total_size = max_total_size
        self._keep = dict(keep)
        self._max_pending = max_pending
        self._pending = 0
        self._idle = threading.Condition()
        self._executor: ThreadPoolExecutor | None = None
        self._hooks: dict[str, str] = {}  # profile id -> hook, read from metadata once
        self._warn = RateLimitedLog()

    # --- lifecycle --------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory and the writer thread; raise OtelperfError if impossible."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OtelperfError(
                f"profiling.output_dir {str(self.directory)!r} cannot be created: "
                f"{exc.strerror or exc}; choose a writable directory"
            ) from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise OtelperfError(
                f"profiling.output_dir {str(self.directory)!r} is not writable by this process"
            )
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="otelperf-profiles")

    def check(self) -> None:
        """Raise OtelperfError unless the directory exists writable or could be created."""
        path = self.directory.absolute()
        while not path.exists() and path.parent != path:
            path = path.parent
        where = str(self.directory)
        if not path.is_dir():
            raise OtelperfError(
                f"profiling.output_dir {where!r} cannot be created: {str(path)!r} is not a "
                "directory; choose a writable directory"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise OtelperfError(
                f"profiling.output_dir {where!r} is not writable by this process "
                f"({str(path)!r} is not)"
            )

    def after_fork(self) -> None:
        """In a forked child: forget the parent's writer thread and what it had queued."""
        self._executor = None
        self._pending = 0
        self._idle = threading.Condition()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted profile is written; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Write what is queued (within ``timeout``), then stop the writer thread."""
        done = self.flush(timeout)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=done)
        return done

    # --- writing ----------------------------------------------------------------------

    def submit(self, job: SaveJob, done: Callable[[bool], None]) -> bool:
        """Queue ``job``; ``done(written)`` is called from the writer thread.

        Returns False, queueing nothing, when the store is closed or already has
        ``max_pending`` profiles waiting (profiles are dropped rather than piling up
        in memory behind a slow disk).
        """
        executor = self._executor
        with self._idle:
            if executor is None or self._pending >= self._max_pending:
                return False
            self._pending += 1
        try:
            executor.submit(self._run, job, done)
        except RuntimeError:  # shut down meanwhile
            self._finished()
            return False
        return True

    def _finished(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _run(self, job: SaveJob, done: Callable[[bool], None]) -> None:
        try:
            written = self._save(job)
            try:
                done(written)
            except Exception:  # pragma: no cover - the callback only counts
                self._warn.exception("profile callback failed")
        finally:
            self._finished()

    def _save(self, job: SaveJob) -> bool:
        files: dict[str, str] = {}
        size = 0

        def write_file(extension: str, content: bytes) -> None:
            nonlocal size
            name = f"{job.id}.{extension}"
            self._write_atomic(name, content)
            files[extension] = name
            size += len(content)

        try:
            job.captured.write(job.describe, write_file)
            meta = {**job.meta, "files": files, "size": size}
            self._write_atomic(f"{job.id}.json", json.dumps(meta, indent=1).encode())
        except Exception as exc:
            for name in files.values():
                self._remove(name)
            self._warn.warning(
                "profile %s could not be written to %s: %s: %s",
                job.id,
                self.directory,
                type(exc).__name__,
                exc,
            )
            return False
        self._hooks[job.id] = job.hook
        try:
            self._rotate(job.id, job.hook)
        except OSError as exc:
            self._warn.warning("rotating profiles in %s failed: %s", self.directory, exc)
        return True

    def _write_atomic(self, name: str, content: bytes) -> None:
        tmp = self.directory / f".{name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(content)
            os.replace(tmp, self.directory / name)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # another process rotated it first
            (self.directory / name).unlink()

    # --- rotation and listing ---------------------------------------------------------

    def _scan(self) -> tuple[dict[str, list[tuple[str, int]]], dict[str, float]]:
        """Profile files by id (name, size), and the newest mtime of each id."""
        by_id: dict[str, list[tuple[str, int]]] = {}
        mtimes: dict[str, float] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                found = _FILE.fullmatch(entry.name)
                if found is None or _ID.fullmatch(found["id"]) is None:
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                key = found["id"]
                by_id.setdefault(key, []).append((entry.name, stat.st_size))
                mtimes[key] = max(mtimes.get(key, 0.0), stat.st_mtime)
        return by_id, mtimes

    def _hook_of(self, profile_id: str) -> str | None:
        hook = self._hooks.get(profile_id)
        if hook is None:
            meta = self._read_meta(profile_id)
            if meta is None:
                return None
            hook = str(meta.get("hook", ""))
            self._hooks[profile_id] = hook
        return hook

    def _read_meta(self, profile_id: str) -> dict[str, Any] | None:
        try:
            with open(self.directory / f"{profile_id}.json", "rb") as handle:
                meta = json.loads(handle.read())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def _rotate(self, newest: str, hook: str) -> None:
        by_id, mtimes = self._scan()
        now = time.time()
        complete: list[str] = []
        for profile_id, files in by_id.items():
            if any(name == f"{profile_id}.json" for name, _ in files):
                complete.append(profile_id)
            elif now - mtimes[profile_id] > _ORPHAN_AGE:
                for name, _ in files:
                    self._remove(name)
        complete.sort()
        doomed: set[str] = set()
        keep = self._keep.get(hook)
        if keep is not None:
            same = [p for p in complete if p != newest and self._hook_of(p) == hook]
            excess = len(same) + 1 - keep
            doomed.update(same[: max(excess, 0)])
        total = sum(size for p in complete if p not in doomed for _, size in by_id[p])
        for profile_id in complete:
            if total <= self._max_total_size:
                break
            if profile_id == newest or profile_id in doomed:
                continue
            doomed.add(profile_id)
            total -= sum(size for _, size in by_id[profile_id])
        for profile_id in doomed:
            # Metadata first: a profile without it is no longer listed or counted.
            self._remove(f"{profile_id}.json")
            for name, _ in by_id[profile_id]:
                if not name.endswith(".json") or name.endswith(".speedscope.json"):
                    self._remove(name)
            self._hooks.pop(profile_id, None)

    def profiles(self) -> list[dict[str, Any]]:
        """The metadata of every complete profile, newest first (reads the directory)."""
        by_id, _ = self._scan()
        listed: list[dict[str, Any]] = []
        for profile_id in sorted(by_id, reverse=True):
            if len(listed) >= _MAX_LISTED:
                break
            if not any(name == f"{profile_id}.json" for name, _ in by_id[profile_id]):
                continue
            meta = self._read_meta(profile_id)
            if meta is not None:
                listed.append(meta)
        return listed

    def read(self, name: str) -> bytes | None:
        """The content of profile file ``name``, or None if it is not one (or is gone)."""
        if not valid_file_name(name):
            return None
        try:
            with open(self.directory / name, "rb") as handle:
                return handle.read()
        except OSError:
            return None
