"""Process metrics (CPU, memory, threads, file descriptors, GC) from the contrib instrumentor.

``opentelemetry-instrumentation-system-metrics`` already reads these through psutil
and follows the semantic conventions, so it is reused rather than rewritten. Three
of its habits need a wrapper:

- ``SystemMetricsInstrumentor`` is a process-wide singleton whose ``uninstrument()``
  removes nothing, so a second app (or a second lifespan) would silently get no
  process metrics. :class:`ProcessInstrumentor` is an ordinary class instead.
- Its callbacks keep reporting after "uninstrumenting" and may raise (psutil on an
  unusual platform), which the SDK logs with a traceback at every collection. The
  instrumentor is handed a :class:`GatedMeterProvider`, whose observable callbacks
  report only while the gate is open and log a failing callback once.
- It reads the process chosen at construction; after ``fork()`` it would keep
  reporting the parent, so the process handle is refreshed when the pid changes.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any, Protocol

from opentelemetry.metrics import (
    CallbackT,
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
    _Gauge,
)
from opentelemetry.util.types import Attributes

from otelperf._errors import OtelperfError
from otelperf._instruments import InstrumentSpec, register
from otelperf.runtime._gate import Gate

__all__ = [
    "PROCESS_METRICS",
    "GatedMeterProvider",
    "Instrumentor",
    "new_process_instrumentor",
]

PROCESS_METRICS: dict[str, list[str] | None] = {
    "process.cpu.time": ["user", "system"],
    "process.cpu.utilization": None,
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.thread.count": None,
    "process.open_file_descriptor.count": None,
    "process.context_switches": ["involuntary", "voluntary"],
    "process.disk.io": ["read", "write"],
    "cpython.gc.collections": None,
    "cpython.gc.collected_objects": None,
    "cpython.gc.uncollectable_objects": None,
}
"""The instrumentor's config: process-level metrics only, a handful of series each.

The system-wide ones (per-CPU, per-disk, per-NIC, network connections) are left
out: they multiply series by host hardware and belong to a host agent.
"""

_GC_ATTRS = ("cpython.gc.generation", "generation")

register(
    InstrumentSpec(
        "process.cpu.time",
        "observable_counter",
        "s",
        "CPU seconds used by the process, by `type` (user, system).",
        ("type",),
        "runtime",
    ),
    InstrumentSpec(
        "process.cpu.utilization",
        "observable_gauge",
        "1",
        "Process CPU time since the previous collection over elapsed time and CPU count.",
        (),
        "runtime",
    ),
    InstrumentSpec(
        "process.memory.usage",
        "observable_up_down_counter",
        "By",
        "Resident memory of the process (RSS).",
        (),
        "runtime",
    ),
    InstrumentSpec(
        "process.memory.virtual",
        "observable_up_down_counter",
        "By",
        "Virtual memory committed by the process.",
        (),
        "runtime",
    ),
    InstrumentSpec(
        "process.thread.count",
        "observable_up_down_counter",
        "",
        "Threads of the process.",
        (),
        "runtime",
    ),
    InstrumentSpec(
        "process.open_file_descriptor.count",
        "observable_up_down_counter",
        "",
        "File descriptors open in the process (not on Windows).",
        (),
        "runtime",
    ),
    InstrumentSpec(
        "process.context_switches",
        "observable_counter",
        "",
        "Context switches of the process, by `type` (voluntary, involuntary).",
        ("type",),
        "runtime",
    ),
    InstrumentSpec(
        "process.disk.io",
        "observable_counter",
        "By",
        "Bytes the process read from and wrote to storage, by `direction` (where available).",
        ("direction",),
        "runtime",
    ),
    InstrumentSpec(
        "cpython.gc.collections",
        "observable_counter",
        "{collection}",
        "Garbage collections per generation since interpreter start.",
        _GC_ATTRS,
        "runtime",
    ),
    InstrumentSpec(
        "cpython.gc.collected_objects",
        "observable_counter",
        "{object}",
        "Objects collected per generation since interpreter start.",
        _GC_ATTRS,
        "runtime",
    ),
    InstrumentSpec(
        "cpython.gc.uncollectable_objects",
        "observable_counter",
        "{object}",
        "Uncollectable objects found per generation since interpreter start.",
        _GC_ATTRS,
        "runtime",
    ),
)


class Instrumentor(Protocol):
    """What :func:`new_process_instrumentor` returns (a ``BaseInstrumentor``)."""

    def instrument(self, **kwargs: Any) -> Any: ...


class _GatedMeter(Meter):
    """A meter that creates its instruments on ``meter``, observable callbacks gated."""

    def __init__(self, meter: Meter, gate: Gate) -> None:
        super().__init__(meter.name, meter.version, meter.schema_url)
        self._meter = meter
        self._gate = gate

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Counter:
        return self._meter.create_counter(name, unit, description)

    def create_up_down_counter(
        self, name: str, unit: str = "", description: str = ""
    ) -> UpDownCounter:
        return self._meter.create_up_down_counter(name, unit, description)

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> _Gauge:
        return self._meter.create_gauge(name, unit, description)

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> Histogram:
        return self._meter.create_histogram(
            name,
            unit,
            description,
            explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory,
        )

    def create_observable_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableCounter:
        return self._meter.create_observable_counter(
            name, self._gate.wrap(name, callbacks), unit, description
        )

    def create_observable_gauge(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableGauge:
        return self._meter.create_observable_gauge(
            name, self._gate.wrap(name, callbacks), unit, description
        )

    def create_observable_up_down_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableUpDownCounter:
        return self._meter.create_observable_up_down_counter(
            name, self._gate.wrap(name, callbacks), unit, description
        )


class GatedMeterProvider(MeterProvider):
    """Hands out meters of ``provider`` whose observable callbacks obey ``gate``."""

    def __init__(self, provider: MeterProvider, gate: Gate) -> None:
        self._provider = provider
        self._gate = gate

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Meter:
        return _GatedMeter(
            self._provider.get_meter(name, version, schema_url, attributes), self._gate
        )


def new_process_instrumentor(gate: Gate) -> Instrumentor:
    """A fresh (non-singleton) instrumentor for :data:`PROCESS_METRICS`.

    ``gate.before`` is set to refresh the instrumentor's process handle after a fork.
    Raises :class:`OtelperfError` naming the missing package when it is not installed.
    """
    try:
        # psutil ships no type hints; through import_module it is plain Any to mypy.
        psutil = importlib.import_module("psutil")
        from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
    except ImportError as exc:
        raise OtelperfError(
            "runtime.process needs the 'opentelemetry-instrumentation-system-metrics' package "
            f"(and psutil), which cannot be imported ({exc}); reinstall otelperf, or set "
            "runtime.process: false"
        ) from exc

    class ProcessInstrumentor(SystemMetricsInstrumentor):
        def __new__(cls, *args: Any, **kwargs: Any) -> ProcessInstrumentor:
            # BaseInstrumentor.__new__ returns one shared instance per process.
            return object.__new__(cls)

    instrumentor = ProcessInstrumentor(config=dict(PROCESS_METRICS))
    pid = os.getpid()

    def follow_fork() -> None:
        nonlocal pid
        if os.getpid() != pid:
            pid = os.getpid()
            instrumentor._proc = psutil.Process(pid)

    gate.before = follow_fork
    return instrumentor
