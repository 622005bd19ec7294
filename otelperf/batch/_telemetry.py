"""What a batcher reports: its instruments (declared once here) and its flush spans.

Per item, nothing is recorded: counts are plain integers the batcher keeps anyway,
reported by observable instruments at collection time. Per flush, one span, one
batch-size point and one duration point, recorded inside the span so that
histogram exemplars lead to it.

The SDK keeps the callbacks of an observable instrument's first creation and
quietly returns that instrument when it is created again, so the observable
instruments are created once per meter and report every batcher started on it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from otelperf import _instruments
from otelperf._errors import error_type
from otelperf._instruments import SECONDS_BUCKETS, InstrumentSpec
from otelperf.batch._stats import BatcherStats

__all__ = [
    "ATTR_DROP_REASON",
    "ATTR_NAME",
    "ATTR_OUTCOME",
    "ATTR_SINK",
    "BatchTelemetry",
    "current_link",
]

ATTR_NAME = "otelperf.batch.name"
ATTR_SINK = "otelperf.batch.sink"
ATTR_OUTCOME = "otelperf.batch.outcome"
ATTR_DROP_REASON = "otelperf.batch.drop.reason"

ITEM_BUCKETS: tuple[float, ...] = (
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
)  # fmt: skip
"""Batch sizes, in items."""

_instruments.register(
    InstrumentSpec(
        "otelperf.batch.queue.size",
        "observable_up_down_counter",
        "{item}",
        "Items a batcher holds: queued, or being written.",
        (ATTR_NAME,),
        "batch",
    ),
    InstrumentSpec(
        "otelperf.batch.queue.limit",
        "observable_up_down_counter",
        "{item}",
        "Most items a batcher may hold (`max_queue`); beyond it `on_full` applies.",
        (ATTR_NAME,),
        "batch",
    ),
    InstrumentSpec(
        "otelperf.batch.items",
        "observable_counter",
        "{item}",
        "Items by `otelperf.batch.outcome`: written, dead_lettered, dropped (with "
        "`otelperf.batch.drop.reason`: queue_full, evicted, closed, undeliverable) and "
        "retried (sent again; an event count, not a final state).",
        (ATTR_NAME, ATTR_OUTCOME, ATTR_DROP_REASON),
        "batch",
    ),
    InstrumentSpec(
        "otelperf.batch.size",
        "histogram",
        "{item}",
        "Items per flushed batch.",
        (ATTR_NAME, ATTR_SINK),
        "batch",
        ITEM_BUCKETS,
    ),
    InstrumentSpec(
        "otelperf.batch.flush.duration",
        "histogram",
        "s",
        "Duration of a flush, retries and splits included; `error.type` is set when some "
        "of its items were not written.",
        (ATTR_NAME, ATTR_SINK, ERROR_TYPE),
        "batch",
        SECONDS_BUCKETS,
    ),
)

_EMPTY = Context()
"""No span: a point recorded in it gets no exemplar."""

_MAX_EVENTS = 16
"""Retry events kept per flush span (a batch split down to single items has many)."""


def current_link() -> SpanContext | None:
    """The current span's context if it is sampled (worth linking to), else None."""
    span_context = trace.get_current_span().get_span_context()
    return span_context if span_context.trace_flags.sampled else None


class _Observed:
    """The batchers reporting through one meter's observable instruments."""

    def __init__(self, meter: Meter) -> None:
        self.sources: weakref.WeakSet[BatchTelemetry] = weakref.WeakSet()
        _instruments.create(meter, "otelperf.batch.queue.size", [self._sizes])
        _instruments.create(meter, "otelperf.batch.queue.limit", [self._limits])
        _instruments.create(meter, "otelperf.batch.items", [self._items])

    def _sizes(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.stats().held, s.attributes) for s in list(self.sources)]

    def _limits(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.limit, s.attributes) for s in list(self.sources)]

    def _items(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for source in list(self.sources):
            stats = source.stats()
            name = source.name
            for outcome, count in (
                ("written", stats.written),
                ("dead_lettered", stats.dead_lettered),
                ("retried", stats.retried),
            ):
                out.append(Observation(count, {ATTR_NAME: name, ATTR_OUTCOME: outcome}))
            for reason, count in stats.dropped_by_reason.items():
                attrs = {ATTR_NAME: name, ATTR_OUTCOME: "dropped", ATTR_DROP_REASON: reason}
                out.append(Observation(count, attrs))
        return out


_OBSERVED_LOCK = threading.Lock()
_OBSERVED: weakref.WeakKeyDictionary[Meter, _Observed] = weakref.WeakKeyDictionary()


class BatchTelemetry:
    """One batcher's instruments and spans, bound to the tracer and meter it was started with."""

    def __init__(
        self,
        *,
        name: str,
        sink: str,
        limit: int,
        tracer: trace.Tracer,
        meter: Meter,
        stats: Callable[[], BatcherStats],
    ) -> None:
        self.name = name
        self.limit = limit
        self.stats = stats
        self.attributes = {ATTR_NAME: name}
        self._sink_attributes = {ATTR_NAME: name, ATTR_SINK: sink}
        self._span_name = f"flush {name}"
        self.tracer = tracer
        self.size = _instruments.create(meter, "otelperf.batch.size")
        self.duration = _instruments.create(meter, "otelperf.batch.flush.duration")
        with _OBSERVED_LOCK:
            try:
                observed = _OBSERVED.get(meter)
                if observed is None:
                    observed = _OBSERVED[meter] = _Observed(meter)
            except TypeError:  # a meter that cannot be weakly referenced: report on our own
                observed = _Observed(meter)
                self._own = observed  # keep it alive as long as we are
            observed.sources.add(self)

    def detach(self) -> None:
        """Stop reporting through the observable instruments (a newer telemetry takes over)."""
        with _OBSERVED_LOCK:
            for observed in list(_OBSERVED.values()):
                observed.sources.discard(self)

    def start_flush(self, size: int, links: Sequence[SpanContext]) -> Span:
        """The root span of one flush, linked to spans that enqueued its items (capped)."""
        return self.tracer.start_span(
            self._span_name,
            context=Context(),
            kind=SpanKind.INTERNAL,
            attributes={**self._sink_attributes, "otelperf.batch.size": size},
            links=[Link(link) for link in links],
        )

    def end_flush(
        self,
        span: Span,
        context: Context,
        *,
        size: int,
        duration: float,
        end_time: int,
        written: int,
        failed: int,
        error_type: str | None,
    ) -> None:
        """Record the flush's points and end its span.

        The duration is recorded in the span's ``context`` so that its exemplar leads to
        the flush; the batch size, with no exemplar, costs less.
        """
        self.size.record(size, self._sink_attributes, context=_EMPTY)
        if error_type is not None:
            attrs: dict[str, Any] = {**self._sink_attributes, ERROR_TYPE: error_type}
        else:
            attrs = self._sink_attributes
        self.duration.record(duration, attrs, context=context)
        if failed:  # all written otherwise: otelperf.batch.size says how many
            span.set_attributes(
                {
                    "otelperf.batch.written": written,
                    "otelperf.batch.not_written": failed,
                    ERROR_TYPE: error_type or "_OTHER",
                }
            )
            span.set_status(
                Status(StatusCode.ERROR, f"{failed} of {size} item(s) not written: {error_type}")
            )
        span.end(end_time=end_time)

    @staticmethod
    def retry_event(span: Span, count: int, items: int, error: BaseException, delay: float) -> None:
        """Note a retry (or a split, when ``delay`` is 0) on the flush span; capped."""
        if count <= _MAX_EVENTS:
            span.add_event(
                "otelperf.batch.split" if delay == 0 else "otelperf.batch.retry",
                {
                    ERROR_TYPE: error_type(error),
                    "otelperf.batch.part.size": items,
                    "otelperf.batch.retry.delay": delay,
                },
            )
