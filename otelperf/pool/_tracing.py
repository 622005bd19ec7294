"""Query telemetry: one client span and one ``db.client.operation.duration`` point per
operation (execute, executemany, stream, COPY), shared by the async and sync cursors.

What a query text implies for telemetry (span name, operation, summary, sanitized
text, attribute dicts) is computed once per distinct text and cached, so an operation
costs a dict lookup, a span and a histogram point. Span and metric attributes follow
the stable database semantic conventions.

Nothing secret leaves here: the query text is recorded only when the pool's
``record_statements`` asks, and then sanitized (every literal replaced by ``?``);
parameters are never recorded; a failure is described by its SQLSTATE or exception
class, never by its message (PostgreSQL messages quote values: ``Key (email)=(...)``).
"""

from __future__ import annotations

import logging
from asyncio import get_running_loop
from time import perf_counter, time_ns
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.metrics import Meter
from opentelemetry.semconv.attributes.db_attributes import (
    DB_NAMESPACE,
    DB_OPERATION_BATCH_SIZE,
    DB_OPERATION_NAME,
    DB_QUERY_SUMMARY,
    DB_QUERY_TEXT,
    DB_RESPONSE_STATUS_CODE,
    DB_SYSTEM_NAME,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.trace import SpanKind, Tracer

from otelperf import _instruments
from otelperf._deferred import NextTurn
from otelperf._errors import error_type
from otelperf._spans import SpanRecorder
from otelperf.pool._config import Target
from otelperf.pool._metrics import OPERATION_DURATION
from otelperf.pool._sql import QueryShape, analyze

__all__ = ["Operation", "QueryTelemetry"]

_log = logging.getLogger("otelperf.pool")

SYSTEM = "postgresql"
CACHE_SIZE = 2048
"""Distinct query texts remembered; the cache starts over when full."""

_Done = tuple[str, dict[str, Any], int, float, Context, "str | None", dict[str, Any]]
"""A finished operation waiting to be reported: name, span attributes, start (ns),
duration (s), context, error type, metric attributes."""

Operation = tuple["_Shape", dict[str, Any], Context, int, float]
"""What :meth:`QueryTelemetry.begin` hands to ``end``/``fail``: shape, span attributes,
the context the query ran in, start (ns since the epoch) and start (perf_counter)."""


class _Shape:
    """Span name and attribute dicts for one query text (and its failures)."""

    __slots__ = (
        "batch",
        "errors",
        "metric_attributes",
        "name",
        "operation",
        "span_attributes",
        "summary",
    )

    def __init__(
        self,
        name: str,
        operation: str | None,
        summary: str | None,
        span_attributes: dict[str, Any],
        metric_attributes: dict[str, Any],
    ) -> None:
        self.name = name
        self.operation = operation
        self.summary = summary
        self.span_attributes = span_attributes
        self.metric_attributes = metric_attributes
        self.errors: dict[str, dict[str, Any]] = {}
        self.batch: _Shape | None = None
        """The shape of an ``executemany`` of this text, made on first use."""

    def error_attributes(self, error_type: str, status: str | None) -> dict[str, Any]:
        attributes = self.errors.get(error_type)
        if attributes is None:
            attributes = {**self.metric_attributes, ERROR_TYPE: error_type}
            if status is not None:
                attributes[DB_RESPONSE_STATUS_CODE] = status
            if len(self.errors) < 64:  # error types are few; never let them grow unbounded
                self.errors[error_type] = attributes
        return attributes


class QueryTelemetry:
    """Spans and duration points for the queries of one pool's connections."""

    def __init__(
        self, tracer: Tracer, meter: Meter, target: Target, *, record_statements: bool
    ) -> None:
        self._spans = SpanRecorder(tracer)
        self._duration = _instruments.create(meter, OPERATION_DURATION)
        self._record_statements = record_statements
        base: dict[str, Any] = {DB_SYSTEM_NAME: SYSTEM}
        if target.dbname:
            base[DB_NAMESPACE] = target.dbname
        if target.host:
            base[SERVER_ADDRESS] = target.host
            if target.port is not None:
                base[SERVER_PORT] = target.port
        self._base = base
        self._fallback_name = target.dbname or SYSTEM
        self._shapes: dict[object, _Shape] = {}
        self._unknown = self._make(QueryShape(None, None, ""), record_text=False)
        self.errors = 0
        """Telemetry failures (logged once each kind); the queries themselves went on."""
        self._logged: set[str] = set()
        self._pending: NextTurn[_Done] = NextTurn(self._emit)

    # --- the hot path ---------------------------------------------------------

    def begin(self, query: object, context: Any = None) -> Operation | None:
        """Note the start of one operation on ``query``; None if telemetry failed."""
        try:
            try:
                shape = self._shapes[query]
            except (KeyError, TypeError):  # new text, or an unhashable sql.Composed
                shape = self._shape(query, context)
            return (shape, shape.span_attributes, get_current(), time_ns(), perf_counter())
        except Exception:
            self._failed("begin")
            return None

    def begin_batch(self, query: object, size: int | None, context: Any = None) -> Operation | None:
        """Note the start of an ``executemany`` of ``size`` parameter sets (None: unknown)."""
        try:
            try:
                shape = self._shapes[query]
            except (KeyError, TypeError):
                shape = self._shape(query, context)
            attributes = shape.span_attributes
            if size is None or size != 1:  # one parameter set is not a batch
                shape = shape.batch or self._batch(shape)
                attributes = shape.span_attributes
                if size is not None:
                    attributes = {**attributes, DB_OPERATION_BATCH_SIZE: size}
            return (shape, attributes, get_current(), time_ns(), perf_counter())
        except Exception:
            self._failed("begin")
            return None

    def end(self, operation: Operation | None) -> None:
        """The operation succeeded: its span and duration point."""
        if operation is None:
            return
        shape, attributes, ctx, start_ns, started = operation
        elapsed = perf_counter() - started
        item = (shape.name, attributes, start_ns, elapsed, ctx, None, shape.metric_attributes)
        try:
            loop = get_running_loop()
        except RuntimeError:  # a thread of the sync pool: now
            self._emit(item)
            return
        self._pending.add(item, loop)

    def flush(self) -> None:
        """Report what ``end`` left for the event loop's next turn (and at close)."""
        self._pending.flush()

    def _emit(self, item: _Done) -> None:
        name, attributes, start_ns, elapsed, ctx, error, metric_attributes = item
        try:
            end_ns = start_ns + int(elapsed * 1e9)
            self._spans.record(name, SpanKind.CLIENT, attributes, start_ns, end_ns, ctx, error)
            self._duration.record(elapsed, metric_attributes, context=ctx)
        except Exception:
            self._failed("end")

    def fail(self, operation: Operation | None, error: BaseException) -> None:
        """The operation raised ``error``."""
        if operation is None:
            return
        shape, attributes, ctx, start_ns, started = operation
        elapsed = perf_counter() - started
        try:
            status = getattr(error, "sqlstate", None)
            status = status if isinstance(status, str) and status else None
            kind = status if status is not None else error_type(error)
            attributes = {**attributes, ERROR_TYPE: kind}
            if status is not None:
                attributes[DB_RESPONSE_STATUS_CODE] = status
            self._spans.record(shape.name, SpanKind.CLIENT, attributes, start_ns, None, ctx, kind)
            self._duration.record(elapsed, shape.error_attributes(kind, status), context=ctx)
        except Exception:
            self._failed("fail")

    # --- shapes -----------------------------------------------------------------

    def _shape(self, query: object, context: Any) -> _Shape:
        text = _text(query, context)
        if text is None:
            return self._unknown
        shape = self._make(analyze(text), record_text=self._record_statements)
        if isinstance(query, (str, bytes)):
            if len(self._shapes) >= CACHE_SIZE:
                self._shapes = {}  # ad-hoc texts with inline values; start over
            self._shapes[query] = shape
        return shape

    def _make(self, parsed: QueryShape, *, record_text: bool) -> _Shape:
        span_attributes = dict(self._base)
        metric_attributes = dict(self._base)
        if parsed.operation is not None:
            span_attributes[DB_OPERATION_NAME] = parsed.operation
            metric_attributes[DB_OPERATION_NAME] = parsed.operation
        if parsed.summary is not None:
            span_attributes[DB_QUERY_SUMMARY] = parsed.summary
        if record_text and parsed.sanitized:
            span_attributes[DB_QUERY_TEXT] = parsed.sanitized
        name = parsed.summary or parsed.operation or self._fallback_name
        return _Shape(name, parsed.operation, parsed.summary, span_attributes, metric_attributes)

    def _batch(self, shape: _Shape) -> _Shape:
        operation = f"BATCH {shape.operation}" if shape.operation else "BATCH"
        summary = f"BATCH {shape.summary}" if shape.summary else None
        span_attributes = {**shape.span_attributes, DB_OPERATION_NAME: operation}
        if summary is not None:
            span_attributes[DB_QUERY_SUMMARY] = summary
        metric_attributes = {**shape.metric_attributes, DB_OPERATION_NAME: operation}
        batch = _Shape(summary or operation, operation, summary, span_attributes, metric_attributes)
        shape.batch = batch
        return batch

    def _failed(self, where: str) -> None:
        self.errors += 1
        if where not in self._logged:
            self._logged.add(where)
            _log.warning(
                "query telemetry failed in %s; the query itself went on", where, exc_info=True
            )


def _text(query: object, context: Any) -> str | None:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    as_string = getattr(query, "as_string", None)  # psycopg.sql.Composable
    if as_string is not None:
        try:
            text = as_string(context)
        except Exception:
            return None
        return text if isinstance(text, str) else None
    return None
