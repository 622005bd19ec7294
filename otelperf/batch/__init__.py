"""Batchers: group writes, flush them by size or age, and lose nothing.

``build_batcher(name, config, resolve_pool)`` turns a ``batchers:`` entry into a
:class:`Batcher`; Python code can also build one around any :class:`Sink`.
"""

from otelperf.batch._batcher import Batcher
from otelperf.batch._build import build_batcher
from otelperf.batch._deadletter import DeadLetterFile
from otelperf.batch._errors import BatcherClosedError, BatcherError, BatcherFullError
from otelperf.batch._postgres import ConnectionSource, PostgresCopySink
from otelperf.batch._retry import Backoff
from otelperf.batch._sinks import FunctionSink, JsonlFileSink, Sink, default_is_item_error
from otelperf.batch._stats import BatcherStats

__all__ = [
    "Backoff",
    "Batcher",
    "BatcherClosedError",
    "BatcherError",
    "BatcherFullError",
    "BatcherStats",
    "ConnectionSource",
    "DeadLetterFile",
    "FunctionSink",
    "JsonlFileSink",
    "PostgresCopySink",
    "Sink",
    "build_batcher",
    "default_is_item_error",
]
