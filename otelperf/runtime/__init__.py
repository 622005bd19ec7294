"""Runtime metrics: process CPU/memory/GC, filesystem space and event-loop lag."""

from otelperf.runtime._metrics import RuntimeMetrics

__all__ = ["RuntimeMetrics"]
