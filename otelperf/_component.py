"""The contract between ``Perf`` and the resources it owns (caches, pools, batchers, ...).

A component is built from its config section when the Perf is created (no I/O, so
decorators such as ``@perf.cached`` can be applied at import time), started in the
lifespan startup with the telemetry it reports through, and stopped (closed,
flushed) in the shutdown. Components use only the OpenTelemetry API objects given
here, never the SDK and never each other; an operation that is over when it is
reported is recorded through ``otelperf._spans.SpanRecorder``, which knows the SDK.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

__all__ = ["Component", "ComponentTelemetry"]


@dataclass(frozen=True)
class ComponentTelemetry:
    """What a component reports through."""

    tracer: Tracer
    meter: Meter


@runtime_checkable
class Component(Protocol):
    """A resource Perf opens at startup and closes at shutdown."""

    name: str

    async def start(self, telemetry: ComponentTelemetry) -> None:
        """Open connections, start background tasks; called inside the running event loop."""

    async def stop(self) -> None:
        """Close and flush everything; nothing queued may be lost. Idempotent."""

    def readiness_check(self) -> Callable[[], Awaitable[object]] | None:
        """An async check for ``/readyz`` (False or an exception means not ready), or None."""

    async def ping(self) -> None:
        """Reach the backing service once (``otelperf check --connect``); raise when it fails."""
