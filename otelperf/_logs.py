"""Log correlation (trace and span ids on stdlib log records) and OTLP log export."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["export_logs", "install_correlation"]

_lock = threading.Lock()
_users = 0


def install_correlation(tracer_provider: Any) -> Callable[[], None]:
    """Add ``otelTraceID``, ``otelSpanID``, ``otelTraceSampled`` and ``otelServiceName`` to
    every log record (the names opentelemetry-instrumentation-logging uses, so existing
    formats work); returns the function that removes it again.

    The record factory is process-wide, so it is installed by the first Perf and
    removed with the last one.
    """
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    global _users
    with _lock:
        _users += 1
        if _users == 1:
            LoggingInstrumentor().instrument(
                tracer_provider=tracer_provider, inject_trace_context=True, set_logging_format=False
            )
    removed = False

    def remove() -> None:
        global _users
        nonlocal removed
        with _lock:
            if removed:
                return
            removed = True
            _users -= 1
            if _users == 0:
                LoggingInstrumentor().uninstrument()

    return remove


def export_logs(exporter: Any, resource: Any, level: str) -> Callable[[], None]:
    """Send stdlib logging records at ``level`` and above through ``exporter``.

    Returns the function that detaches the handler and shuts the logger provider down
    (flushing what is queued).
    """
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    handler = LoggingHandler(level=getattr(logging, level), logger_provider=provider)
    root = logging.getLogger()
    root.addHandler(handler)

    def close() -> None:
        root.removeHandler(handler)
        provider.shutdown()

    return close
