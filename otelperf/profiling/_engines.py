"""The two profiling engines behind one small interface, and who may run when.

- **pyinstrument** samples the stack every ``interval``. With ``async_mode="strict"``
  a profiler belongs to the async context (the task) that started it: while that
  task awaits, the time is charged to its ``await``, and other tasks' work is not
  recorded, so two overlapping requests get two profiles, each with only its own
  work. (Not ``"enabled"``: when the loop leaves the task through anything but a
  coroutine's return, a timer callback say, that mode records whatever runs next,
  another request's work included, as its own.) It cannot start in a context where
  another pyinstrument profiler runs (a function hook inside a profiled request,
  say); that call is skipped. Code that a request runs in a thread pool is not seen
  (pyinstrument samples one thread).
- **cProfile** records every call of the thread (on Python 3.12+, of every thread),
  and only one can run at a time: a second overlapping call is skipped. While a
  cProfile'd coroutine awaits, whatever else the thread runs lands in its profile,
  so cProfile is meant for sync functions.

On Python < 3.12 both engines hook the same per-thread profile slot
(``sys.setprofile``), so neither starts in a thread where the other, or a foreign
profiler, is running: that call is skipped too, never silently corrupting a profile.
"""

from __future__ import annotations

import cProfile
import importlib.util
import marshal
import os
import pstats
import sys
import threading
from collections.abc import Callable
from typing import Any, Literal

from otelperf._errors import MissingDependencyError
from otelperf.profiling._frames import AppCode, TopFrame, cprofile_top, pyinstrument_top

__all__ = ["Captured", "EngineBusyError", "Run", "require_pyinstrument", "start"]

Engine = Literal["pyinstrument", "cprofile"]

_SHARED_SLOT = sys.version_info < (3, 12)
_lock = threading.Lock()
_cprofile_thread: int | None = None  # the thread running otelperf's one cProfile, if any


def _forget_after_fork() -> None:
    # A profile running in the parent at fork time does not run in the child.
    global _lock, _cprofile_thread
    _lock = threading.Lock()
    _cprofile_thread = None


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_after_fork)


class EngineBusyError(Exception):
    """The engine cannot profile this call now; the reason is the message."""


def require_pyinstrument(feature: str) -> None:
    """Raise :class:`otelperf.MissingDependencyError` when pyinstrument is not installed
    (found without importing it: nothing is loaded until a profile runs)."""
    if importlib.util.find_spec("pyinstrument") is None:
        raise MissingDependencyError("pyinstrument", "profiling", feature)


def _foreign_profiler() -> bool:
    current = sys.getprofile()
    return current is not None and not type(current).__module__.startswith("pyinstrument")


class Captured:
    """A stopped profile: its top frames now, its files later (in the writer thread)."""

    def __init__(self, engine: Engine, data: Any) -> None:
        self.engine = engine
        self._data = data

    def top(self, limit: int, app: AppCode) -> list[TopFrame]:
        """The ``limit`` frames with the most own time (see ``_frames``)."""
        if self.engine == "pyinstrument":
            return pyinstrument_top(self._data.frame_records, limit, app)
        return cprofile_top(self._data.stats, limit, app)

    def write(self, describe: str, write_file: Callable[[str, bytes], None]) -> None:
        """Render the profile; ``write_file(extension, content)`` stores each file."""
        if self.engine == "pyinstrument":
            from pyinstrument.renderers import HTMLRenderer, SpeedscopeRenderer

            session = self._data
            session.target_description = describe
            write_file("speedscope.json", SpeedscopeRenderer().render(session).encode())
            write_file("html", HTMLRenderer().render(session).encode())
        else:
            # What pstats.Stats.dump_stats writes, without its detour through a path.
            write_file("pstats", marshal.dumps(self._data.stats))


class Run:
    """One running profile; :meth:`stop` it from the thread (and task) that started it."""

    __slots__ = ("_engine", "_profiler")

    def __init__(self, engine: Engine, profiler: Any) -> None:
        self._engine = engine
        self._profiler = profiler

    @property
    def engine(self) -> Engine:
        return self._engine

    def stop(self) -> Captured:
        """Stop profiling and return what was captured."""
        global _cprofile_thread
        if self._engine == "pyinstrument":
            return Captured("pyinstrument", self._profiler.stop())
        profiler: cProfile.Profile = self._profiler
        profiler.disable()
        with _lock:
            _cprofile_thread = None
        return Captured("cprofile", pstats.Stats(profiler))


def start(engine: Engine, *, interval: float, follow_awaits: bool) -> Run:
    """Start ``engine`` in this thread (and task); raise :class:`EngineBusyError` if not now.

    ``follow_awaits``: pyinstrument's ``async_mode="strict"``, for anything that may
    await; sync functions use ``"disabled"``, which nests inside a request's profile.
    """
    global _cprofile_thread
    thread = threading.get_ident()
    if engine == "pyinstrument":
        from pyinstrument import Profiler

        with _lock:
            if _SHARED_SLOT and (_cprofile_thread == thread or _foreign_profiler()):
                raise EngineBusyError("another profiler holds this thread")
        profiler = Profiler(interval=interval, async_mode="strict" if follow_awaits else "disabled")
        try:
            profiler.start()
        except RuntimeError as exc:  # a pyinstrument profiler already owns this context
            raise EngineBusyError(str(exc)) from None
        return Run("pyinstrument", profiler)
    with _lock:
        if _cprofile_thread is not None:
            raise EngineBusyError("a cProfile profile is already running (one per process)")
        if _SHARED_SLOT and sys.getprofile() is not None:
            raise EngineBusyError("another profiler holds this thread")
        deterministic = cProfile.Profile()
        try:
            deterministic.enable()
        except ValueError as exc:  # 3.12+: another tool holds sys.monitoring's profiler id
            raise EngineBusyError(str(exc)) from None
        _cprofile_thread = thread
    return Run("cprofile", deterministic)
