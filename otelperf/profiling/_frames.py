"""The top frames of a profile by own time, charged to the application code that ran.

A raw "own time" ranking is rarely what a reader wants: a slow request that awaits
a query has its time in asyncio's ``sleep`` or a driver's socket read, and CPU spent
in ``json.dumps`` lands in the C encoder. So every sample (pyinstrument) or every
function's own time (cProfile) is charged to the *deepest application frame* on its
stack: the innermost function that is neither in the standard library, nor in an
installed package, nor in otelperf itself. Time spent awaiting is kept apart
(``await_time``), so a reader can tell a CPU-bound frame from an await-bound one.
A sample with no application frame at all is charged to its innermost real frame.

Both functions are pure (no I/O); they run in the request's ``finally``, so they are
linear in the samples and cache what they learn about each frame.
"""

from __future__ import annotations

import contextlib
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["AppCode", "TopFrame", "cprofile_top", "is_application_file", "pyinstrument_top"]

_AWAIT = "[await]"
_OUT_OF_CONTEXT = "[out-of-context]"
_SYNTHETIC = frozenset({_AWAIT, "[self]", _OUT_OF_CONTEXT, "[root]"})


@dataclass(frozen=True)
class TopFrame:
    """One function and the time charged to it."""

    function: str
    """``qualname`` where known (``Class.method``), else the function's name."""
    location: str
    """``path:line`` of the function's first line, the path shortened for reading."""
    self_time: float
    """Seconds charged to it: its own time plus the library code it called."""
    await_time: float
    """The part of ``self_time`` spent awaiting (pyinstrument only; 0 for cProfile)."""

    def describe(self) -> str:
        """``"build_report (app/reports.py:42)"``."""
        return f"{self.function} ({self.location})"


def _library_prefixes() -> tuple[str, ...]:
    found: list[str] = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    paths = sysconfig.get_paths()
    found += [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    with contextlib.suppress(AttributeError):  # some embedded interpreters lack it
        found += site.getsitepackages()
    user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if isinstance(user_site, str):
        found.append(user_site)
    prefixes = {os.path.abspath(p) for p in found if p}
    # Longest first: the prefix a path is found under is the most specific one.
    return tuple(sorted((_dir(p) for p in prefixes), key=len, reverse=True))


def _dir(path: str) -> str:
    return path if path.endswith(os.sep) else path + os.sep


_LIBRARY = _library_prefixes()
# otelperf itself (even installed editable, outside any prefix): its middleware and
# wrappers are on every stack and are never what a reader is looking for.
_OTELPERF = _dir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class AppCode:
    """Tells application code from the rest, by file path.

    Application code is code outside the Python installation, the virtualenv and
    otelperf, plus the ``packages`` named (top-level import names) even where they are
    installed: an application deployed with ``pip install .`` lives in site-packages.
    """

    def __init__(self, packages: Iterable[str] = ()) -> None:
        self._packages = tuple(p.replace(".", os.sep) for p in packages)
        self._cache: dict[str, bool] = {}

    def __call__(self, path: str) -> bool:
        found = self._cache.get(path)
        if found is None:
            found = self._classify(path)
            if len(self._cache) < 100_000:
                self._cache[path] = found
        return found

    def _classify(self, path: str) -> bool:
        if not path or path.startswith("<") or path == "~":
            return False
        full = os.path.abspath(path) if not os.path.isabs(path) else path
        if full.startswith(_OTELPERF):
            return False
        prefix = next((p for p in _LIBRARY if full.startswith(p)), None)
        if prefix is None:
            return True
        inside = full[len(prefix) :]
        return any(
            inside.startswith(package + os.sep) or inside == package + ".py"
            for package in self._packages
        )


_DEFAULT = AppCode()


def is_application_file(path: str) -> bool:
    """Whether code in ``path`` belongs to the application (not stdlib, packages, otelperf)."""
    return _DEFAULT(path)


def _short(path: str) -> str:
    if not path or path.startswith("<") or path == "~":
        return path or "?"
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    if not relative.startswith(".."):
        return relative
    for entry in sorted((p for p in sys.path if p), key=len, reverse=True):
        if path.startswith(entry.rstrip(os.sep) + os.sep):
            return path[len(entry.rstrip(os.sep)) + 1 :]
    return path


_Where = tuple[str, object] | str
"""A frame's (file, line), or the text to show as is (``<built-in>``, empty)."""


def _location(where: _Where) -> str:
    if isinstance(where, str):
        return where
    path, line = where
    return f"{_short(path)}:{line}"


@dataclass
class _Slot:
    function: str
    where: _Where
    self_time: float = 0.0
    await_time: float = 0.0


def _ranked(slots: Iterable[_Slot], limit: int) -> list[TopFrame]:
    """The ``limit`` slots with the most own time; only these get their paths shortened."""
    ordered = sorted(slots, key=lambda s: s.self_time, reverse=True)
    return [
        TopFrame(s.function, _location(s.where), s.self_time, s.await_time)
        for s in ordered[:limit]
        if s.self_time > 0
    ]


# --- pyinstrument -------------------------------------------------------------------------


def _parse_info(info: str, app: AppCode) -> tuple[str, str, _Where, bool, bool]:
    """(identifier, function, where, is_application, is_synthetic) of a frame info."""
    identifier, _, attributes = info.partition("\x01")
    if identifier in _SYNTHETIC:
        return identifier, identifier, "", False, True
    parts = identifier.split("\x00")
    name = parts[0]
    path = parts[1] if len(parts) > 1 else ""
    line = parts[2] if len(parts) > 2 else "0"
    for attribute in attributes.split("\x01") if attributes else ():
        if attribute.startswith("c") and attribute[1:]:
            name = f"{attribute[1:]}.{name}"
            break
    synthetic = path in ("<thread>",)
    is_app = not synthetic and app(path)
    where: _Where = (path, line) if path != "<built-in>" else "<built-in>"
    return identifier, name, where, is_app, synthetic


def pyinstrument_top(
    records: Sequence[tuple[Sequence[str], float]], limit: int, app: AppCode = _DEFAULT
) -> list[TopFrame]:
    """Top ``limit`` frames of pyinstrument ``frame_records`` (``(stack, seconds)`` pairs)."""
    parsed: dict[str, tuple[str, str, _Where, bool, bool]] = {}
    slots: dict[str, _Slot] = {}
    for stack, seconds in records:
        if not stack:
            continue
        awaiting = stack[-1].startswith((_AWAIT, _OUT_OF_CONTEXT))
        owner: tuple[str, str, _Where, bool, bool] | None = None
        innermost: tuple[str, str, _Where, bool, bool] | None = None
        for info in reversed(stack):
            frame = parsed.get(info)
            if frame is None:
                frame = parsed[info] = _parse_info(info, app)
            if frame[4]:
                continue
            if innermost is None:
                innermost = frame
            if frame[3]:
                owner = frame
                break
        chosen = owner or innermost
        if chosen is None:
            continue
        slot = slots.get(chosen[0])
        if slot is None:
            slot = slots[chosen[0]] = _Slot(chosen[1], chosen[2])
        slot.self_time += seconds
        if awaiting:
            slot.await_time += seconds
    return _ranked(slots.values(), limit)


# --- cProfile -----------------------------------------------------------------------------

_Func = tuple[str, int, str]  # pstats: (file, line, function name)


def _cprofile_name(func: _Func) -> tuple[str, _Where]:
    path, line, name = func
    if path == "~":
        return name, "<built-in>"
    return name, (path, line)


def cprofile_top(stats: Mapping[_Func, Any], limit: int, app: AppCode = _DEFAULT) -> list[TopFrame]:
    """Top ``limit`` frames of a ``pstats.Stats(...).stats`` mapping.

    cProfile keeps one call graph edge per (caller, callee), not whole stacks, so the
    own time of library code is shared among its callers in proportion to the
    cumulative time each caller spent in it, up the graph to the first application
    frames; a cycle or a root with no application caller keeps its own time.
    """
    shares: dict[_Func, dict[_Func, float]] = {}

    def owners(func: _Func, depth: int, seen: frozenset[_Func]) -> dict[_Func, float]:
        cached = shares.get(func)
        if cached is not None:
            return cached
        entry = stats.get(func)
        callers: Mapping[_Func, Any] = entry[4] if entry is not None else {}
        weights = {c: float(edge[3]) for c, edge in callers.items() if c not in seen}
        total = sum(weights.values())
        if depth > 32 or not weights or total <= 0:
            result = {func: 1.0}
        else:
            result = {}
            for caller, weight in weights.items():
                part = weight / total
                if app(caller[0]):
                    result[caller] = result.get(caller, 0.0) + part
                else:
                    for owner, share in owners(caller, depth + 1, seen | {func}).items():
                        result[owner] = result.get(owner, 0.0) + part * share
        # Memoized even when a cycle was cut on the way: an approximation, but it keeps
        # the walk linear in the graph's size.
        shares[func] = result
        return result

    slots: dict[_Func, _Slot] = {}
    for func, entry in stats.items():
        own = float(entry[2])
        if own <= 0:
            continue
        split = {func: 1.0} if app(func[0]) else owners(func, 0, frozenset())
        for owner, share in split.items():
            slot = slots.get(owner)
            if slot is None:
                slot = slots[owner] = _Slot(*_cprofile_name(owner))
            slot.self_time += own * share
    return _ranked(slots.values(), limit)
