"""The ASGI middleware: server spans, stable HTTP metrics, route templates, SLO counters."""

from otelperf.http._middleware import OtelperfMiddleware, redact_query

__all__ = ["OtelperfMiddleware", "redact_query"]
