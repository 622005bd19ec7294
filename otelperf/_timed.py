"""``perf.timed(name)``: a duration histogram and a span for any block of code."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode

if TYPE_CHECKING:
    from otelperf._perf import Perf

__all__ = ["Timed"]

F = TypeVar("F", bound=Callable[..., Any])


class Timed:
    """Times a block as a span named ``name`` and a point on the histogram ``name`` (seconds).

    Works as ``with``, ``async with`` and as a decorator of sync or async functions::

        @perf.timed("pricing.reprice")
        async def reprice(): ...

        with perf.timed("report.render", {"report.kind": "daily"}):
            ...
    """

    def __init__(self, perf: Perf, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        self._perf = perf
        self.name = name
        self.attributes = dict(attributes or {})
        self._stack: list[tuple[float, trace.Span, Token[Context]]] = []

    def _begin(self) -> None:
        span = self._perf.tracer.start_span(self.name, attributes=self.attributes)
        token = context_api.attach(trace.set_span_in_context(span))
        self._stack.append((time.perf_counter(), span, token))

    def _finish(self, exc: BaseException | None) -> None:
        started, span, token = self._stack.pop()
        elapsed = time.perf_counter() - started
        attrs = self.attributes
        if exc is not None:
            attrs = {**attrs, "error.type": type(exc).__qualname__}
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", type(exc).__qualname__)
        self._perf._timed_histogram(self.name).record(elapsed, attrs)
        span.end()
        context_api.detach(token)

    def __enter__(self) -> Timed:
        self._begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc)

    async def __aenter__(self) -> Timed:
        self._begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc)

    def __call__(self, func: F) -> F:
        # A fresh Timed per call keeps concurrent calls from sharing the stack.
        perf, name, attributes = self._perf, self.name, self.attributes
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with Timed(perf, name, attributes):
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with Timed(perf, name, attributes):
                return func(*args, **kwargs)

        return cast(F, wrapper)
