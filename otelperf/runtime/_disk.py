"""Filesystem space of configured paths, as ``system.filesystem.usage`` and ``.utilization``.

Read with :func:`shutil.disk_usage` when the metric reader collects (in its own
thread, never on the event loop). Each path is reported under the mount point that
holds it, as the semantic conventions name it, so two paths on one filesystem make
one series. ``reserved`` is what neither ``used`` nor ``free`` counts (the blocks
ext4 keeps for root), so the states add up to the filesystem's size, as the
conventions require. ``system.filesystem.utilization`` is the fraction ``df`` shows
(used over used + free), without a state, as the OpenTelemetry Collector reports it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Observation

from otelperf._instruments import InstrumentSpec, register

__all__ = ["DiskUsage", "FilesystemReader", "mountpoint"]

_log = logging.getLogger("otelperf.runtime")

_ATTRS = ("system.filesystem.mountpoint", "system.filesystem.state")

register(
    InstrumentSpec(
        "system.filesystem.usage",
        "observable_up_down_counter",
        "By",
        "Space of the filesystems holding `runtime.disk_paths`, by state "
        "(used, free, reserved); the states add up to the filesystem's size.",
        _ATTRS,
        "runtime",
    ),
    InstrumentSpec(
        "system.filesystem.utilization",
        "observable_gauge",
        "1",
        "Used over used + free, as `df` shows it: 1 means no space left for the process.",
        _ATTRS[:1],
        "runtime",
    ),
)


@dataclass(frozen=True)
class DiskUsage:
    """Bytes of one filesystem by state; ``total`` is their sum."""

    mountpoint: str
    used: int
    free: int
    reserved: int

    @property
    def total(self) -> int:
        return self.used + self.free + self.reserved

    @property
    def utilization(self) -> float:
        """``used / (used + free)``: reaches 1 when nothing is left for this process.

        The share of ``total`` would top out below 1 wherever space is reserved (5 %
        on ext4 by default), and an alert on it would never fire.
        """
        return self.used / (self.used + self.free)


def mountpoint(path: str) -> str:
    """The mount point of the filesystem holding ``path`` (an existing path)."""
    current = os.path.realpath(path)
    while not os.path.ismount(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def _read(path: str) -> DiskUsage:
    usage = shutil.disk_usage(path)  # raises for a missing path: checked before mountpoint()
    return DiskUsage(
        mountpoint(path),
        used=usage.used,
        free=usage.free,
        reserved=max(0, usage.total - usage.used - usage.free),
    )


class FilesystemReader:
    """Reads the filesystems of some paths; a failing path is skipped and logged once.

    A path that fails is logged again only after it has been readable in between,
    so a volume that comes and goes is visible in the log without flooding it.
    """

    def __init__(self) -> None:
        self._failing: set[str] = set()

    def read(self, paths: Iterable[str]) -> list[DiskUsage]:
        """One :class:`DiskUsage` per distinct filesystem among ``paths``."""
        found: dict[str, DiskUsage] = {}
        for path in paths:
            try:
                usage = _read(path)
            except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
                if path not in self._failing:
                    self._failing.add(path)
                    _log.warning(
                        "runtime.disk_paths: cannot read the filesystem of %r (%s); "
                        "skipped until it is readable",
                        path,
                        exc,
                    )
                continue
            self._failing.discard(path)
            found.setdefault(usage.mountpoint, usage)
        return list(found.values())

    def usage(self, paths: Iterable[str], options: CallbackOptions) -> list[Observation]:
        """Observations of ``system.filesystem.usage``."""
        return [
            Observation(value, {_ATTRS[0]: disk.mountpoint, _ATTRS[1]: state})
            for disk in self.read(paths)
            for state, value in (
                ("used", disk.used),
                ("free", disk.free),
                ("reserved", disk.reserved),
            )
        ]

    def utilization(self, paths: Iterable[str], options: CallbackOptions) -> list[Observation]:
        """Observations of ``system.filesystem.utilization``."""
        return [
            Observation(disk.utilization, {_ATTRS[0]: disk.mountpoint})
            for disk in self.read(paths)
            if disk.used + disk.free > 0
        ]
