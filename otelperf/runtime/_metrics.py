"""``RuntimeMetrics``: process, filesystem and event-loop metrics for the app's lifespan.

The observable instruments (process and filesystem) are created once per meter
provider and shared by every :class:`RuntimeMetrics` started on it. The SDK keeps
the callbacks of an instrument's first creation and quietly returns that
instrument when it is created again, so a second lifespan on an application-owned
provider would otherwise report through the first one's (stopped) callbacks, or
not at all. Instead the callbacks stay registered and report for whoever is
started: ``stop()`` closes their gates, the next ``start()`` opens them again.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otelperf import _instruments
from otelperf._version import __version__
from otelperf.runtime._disk import FilesystemReader
from otelperf.runtime._gate import Gate
from otelperf.runtime._loop import LoopLagMonitor
from otelperf.runtime._process import GatedMeterProvider, Instrumentor, new_process_instrumentor

if TYPE_CHECKING:
    from otelperf.config._schema import RuntimeConfig

__all__ = ["RuntimeMetrics"]

_SCOPE = "otelperf"

DEFAULT_LAG_INTERVAL = 0.1
"""Seconds between two event-loop delay samples."""


@dataclass(frozen=True)
class _Use:
    process: bool
    disk_paths: tuple[str, ...]


class _ProviderMetrics:
    """The observable runtime instruments of one meter provider and who is using them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Replaced, never mutated: collection threads read them without the lock.
        self._users: dict[int, _Use] = {}
        self._paths: tuple[str, ...] = ()
        self._process_gate = Gate()
        self._process: Instrumentor | None = None
        self._disk_gate = Gate()
        self._disk: FilesystemReader | None = None

    def join(self, key: int, use: _Use, provider: MeterProvider) -> None:
        with self._lock:
            if use.process and self._process is None:
                process = new_process_instrumentor(self._process_gate)
                process.instrument(
                    meter_provider=GatedMeterProvider(provider, self._process_gate),
                    skip_dep_check=True,  # imported fine, which is all the check would tell
                )
                self._process = process
            if use.disk_paths and self._disk is None:
                self._disk = self._create_disk_instruments(provider)
            self._users = {**self._users, key: use}
            self._refresh()

    def leave(self, key: int) -> None:
        with self._lock:
            self._users = {k: u for k, u in self._users.items() if k != key}
            self._refresh()

    def _refresh(self) -> None:
        users = self._users.values()
        self._paths = tuple(dict.fromkeys(p for u in users for p in u.disk_paths))
        self._process_gate.open = any(u.process for u in users)
        self._disk_gate.open = bool(self._paths)

    def _create_disk_instruments(self, provider: MeterProvider) -> FilesystemReader:
        reader = FilesystemReader()
        meter = GatedMeterProvider(provider, self._disk_gate).get_meter(_SCOPE, __version__)

        def usage(options: CallbackOptions) -> Iterable[Observation]:
            return reader.usage(self._paths, options)

        def utilization(options: CallbackOptions) -> Iterable[Observation]:
            return reader.utilization(self._paths, options)

        _instruments.create(meter, "system.filesystem.usage", [usage])
        _instruments.create(meter, "system.filesystem.utilization", [utilization])
        return reader


_BY_PROVIDER: weakref.WeakKeyDictionary[MeterProvider, _ProviderMetrics] = (
    weakref.WeakKeyDictionary()
)
_BY_PROVIDER_LOCK = threading.Lock()


def _provider_metrics(provider: MeterProvider) -> _ProviderMetrics:
    with _BY_PROVIDER_LOCK:
        try:
            found = _BY_PROVIDER.get(provider)
            if found is None:
                found = _BY_PROVIDER[provider] = _ProviderMetrics()
        except TypeError:  # not hashable or not weakly referenceable: nothing to share
            found = _ProviderMetrics()
        return found


class RuntimeMetrics:
    """Process, filesystem and event-loop metrics, started and stopped with the app.

    ``start()`` must run inside the app's event loop (the lifespan startup), as the
    event-loop delay is sampled there; ``stop()`` (the lifespan shutdown) cancels the
    sampling timer and stops reporting. Both are idempotent, and a stopped instance
    can start again, in the same loop or another.

    - ``runtime.process``: ``process.cpu.*``, ``process.memory.*``, threads, file
      descriptors, context switches, process disk IO and ``cpython.gc.*``, read by
      ``opentelemetry-instrumentation-system-metrics``.
    - ``runtime.disk_paths``: ``system.filesystem.usage`` / ``.utilization`` of the
      filesystem holding each path; a path that cannot be read is skipped and logged.
    - ``runtime.event_loop_lag``: ``otelperf.asyncio.eventloop.delay``, how late a
      timer set every ``lag_interval`` seconds fires.

    Collection never raises and never runs on the event loop: observable
    instruments are read in the metric reader's thread.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        meter_provider: MeterProvider,
        *,
        lag_interval: float = DEFAULT_LAG_INTERVAL,
    ) -> None:
        if not lag_interval > 0:
            raise ValueError(f"lag_interval must be greater than 0, got {lag_interval!r}")
        self._use = _Use(config.process, tuple(config.disk_paths))
        self._lag_enabled = config.event_loop_lag
        self._provider = meter_provider
        self._lag_interval = lag_interval
        self._started = False
        self._shared: _ProviderMetrics | None = None  # joined for process or disk metrics
        self._lag: LoopLagMonitor | None = None

    def __repr__(self) -> str:
        state = "started" if self.started else "stopped"
        return (
            f"<RuntimeMetrics process={self._use.process} disk_paths={list(self._use.disk_paths)} "
            f"event_loop_lag={self._lag_enabled} {state}>"
        )

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` did not since."""
        return self._started

    async def start(self) -> None:
        """Start reporting; raises :class:`otelperf.OtelperfError` if a dependency is missing.

        Starting again is a no-op, except that event-loop sampling moves to the
        running loop if it is not the one sampled so far.
        """
        if not self._started:
            if self._use.process or self._use.disk_paths:
                shared = _provider_metrics(self._provider)
                shared.join(id(self), self._use, self._provider)
                self._shared = shared
            self._started = True
        if self._lag_enabled:
            if self._lag is None:
                meter = self._provider.get_meter(_SCOPE, __version__)
                histogram = _instruments.create(meter, "otelperf.asyncio.eventloop.delay")
                self._lag = LoopLagMonitor(histogram, self._lag_interval)
            self._lag.start()

    async def stop(self) -> None:
        """Cancel the event-loop sampling timer and stop reporting."""
        self.close()

    def close(self) -> None:
        """:meth:`stop` for synchronous callers; call it from the event loop's thread."""
        self._started = False
        shared, self._shared = self._shared, None
        lag, self._lag = self._lag, None
        if lag is not None:
            lag.stop()
        if shared is not None:
            shared.leave(id(self))
