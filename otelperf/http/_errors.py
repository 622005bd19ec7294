"""HTTP answers for otelperf errors that carry one (an exhausted pool -> 503)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["ERROR_TYPE_KEY", "exception_handlers", "response_for"]

ERROR_TYPE_KEY = "otelperf.error_type"
"""Scope key through which a handled error names itself to the middleware's telemetry."""


def response_for(exc: BaseException) -> Response | None:
    """The response an otelperf error asks for (``http_status``), or None to let it raise."""
    status = getattr(exc, "http_status", None)
    if not isinstance(status, int):
        return None
    body: dict[str, Any] = {
        "error": "temporarily unavailable",
        "reason": getattr(exc, "reason", ""),
    }
    # Retry-After tells clients and load balancers to back off briefly, not to give up.
    return JSONResponse(body, status_code=status, headers={"retry-after": "1"})


async def _handle(request: Request, exc: Exception) -> Response:
    response = response_for(exc)
    if response is None:
        raise exc
    request.scope[ERROR_TYPE_KEY] = type(exc).__qualname__
    return response


def exception_handlers() -> dict[Any, Any]:
    """Starlette/FastAPI ``exception_handlers`` answering otelperf errors that ask for it."""
    from otelperf.pool import PoolExhaustedError

    return {PoolExhaustedError: _handle}
