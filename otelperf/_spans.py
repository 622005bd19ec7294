"""Spans for operations that are already over: recorded whole, without a live SDK span.

A cache's Redis read or a pool's query gets a client span whose start and end are
known by the time it is reported, and which never becomes the current span (nothing
runs inside it). The SDK's way to report one (``start_span`` then ``end``) builds a
live, lockable span, cleans its attributes one by one, then copies it into a
``ReadableSpan`` for the processors; on a busy machine that costs 15-40 µs, as much
as the Redis read itself.

:class:`SpanRecorder` builds that ``ReadableSpan`` directly and hands it to the
provider's processors, doing what ``Tracer.start_span`` does that shows in the
exported span (the provider's sampler with its attributes and trace state, its id
generator, the random-trace-id flag, its resource and scope, a tracer disabled by the
provider's configurator). It does so only when nothing could tell the difference:
every processor's ``on_start``/``_on_ending`` is the SDK's no-op (batch and simple
processors), attribute limits cannot bite, the SDK's own span metrics are off. In
every other case, and for any tracer that is not the SDK's, it takes the SDK's path.
The processor list is re-checked whenever the provider gains a processor. On the SDK's
path the span starts (``on_start``) when the operation is reported, with its real,
earlier start time.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import getrandbits
from time import time_ns
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.trace import (
    INVALID_SPAN,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TraceState,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

__all__ = ["SPAN_CONTEXT_FIELDS", "SPAN_KEY", "SpanRecorder"]

_UNSET = Status(StatusCode.UNSET)

try:  # the context key the API keeps the current span under: read without three calls
    from opentelemetry.trace.propagation import _SPAN_KEY

    SPAN_KEY: str | None = (
        _SPAN_KEY if set_span_in_context(INVALID_SPAN).get(_SPAN_KEY) is INVALID_SPAN else None
    )
except ImportError:  # pragma: no cover - another API version: get_current_span()
    SPAN_KEY = None

_TRACE_ID_END, _SPAN_ID_END = 1 << 128, 1 << 64
_PROBE = SpanContext(7, 9, True, TraceFlags(3), TraceState([("k", "v")]))
SPAN_CONTEXT_FIELDS = tuple(_PROBE) == (7, 9, True, 3, _PROBE.trace_state, True)
"""Whether a SpanContext unpacks as (trace_id, span_id, is_remote, flags, state, valid),
as the API builds it: read in one step instead of one property call per field."""
_NOTHING = object()
_FLAGS = {bits: TraceFlags(bits) for bits in range(4)}  # sampled x random trace id

try:  # the SDK is a dependency, but a tracer handed in may come from elsewhere
    from opentelemetry.sdk.trace import (
        ConcurrentMultiSpanProcessor,
        ReadableSpan,
        SpanProcessor,
        SynchronousMultiSpanProcessor,
    )
    from opentelemetry.sdk.trace import Tracer as SdkTracer
    from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_OFF,
        ALWAYS_ON,
        ParentBased,
        ParentBasedTraceIdRatio,
        TraceIdRatioBased,
    )

    # ParentBased itself and the subclass OTEL_TRACES_SAMPLER=parentbased_traceidratio builds
    # (it only chooses the root); any other subclass may decide differently: it is asked.
    _PARENT_BASED_TYPES = (ParentBased, ParentBasedTraceIdRatio)

    _MULTI: tuple[type, ...] = (SynchronousMultiSpanProcessor, ConcurrentMultiSpanProcessor)
    _QUIET_STARTS = frozenset(
        cls.__dict__["on_start"] for cls in (SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor)
    )
    _QUIET_ENDINGS = frozenset(
        cls.__dict__["_on_ending"]
        for cls in (SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor)
    )
    _PARENT_BASED = hasattr(TraceIdRatioBased, "TRACE_ID_LIMIT") and all(
        # the fields the shortcut reads; another SDK: ask the sampler
        hasattr(ParentBased(ALWAYS_ON), field)
        for field in (
            "_root",
            "_remote_parent_sampled",
            "_local_parent_sampled",
            "_remote_parent_not_sampled",
            "_local_parent_not_sampled",
        )
    )
except (ImportError, KeyError):  # pragma: no cover - an SDK without these names
    SdkTracer = None  # type: ignore[assignment,misc]


def _quiet(processor: object) -> bool:
    """Whether ``processor`` looks at spans only once they have ended."""
    cls = type(processor)
    return (
        getattr(cls, "on_start", None) in _QUIET_STARTS
        and getattr(cls, "_on_ending", None) in _QUIET_ENDINGS
    )


class SpanRecorder:
    """Records finished operations as spans of ``tracer``.

    ``record`` is the whole API: name, kind, attributes, start and end (ns since the
    epoch), the context the operation ran in (None: the current one) and, for a failed
    operation, the error type put in the span's status. The span may keep the attribute
    mapping itself (callers pass dicts they never change afterwards).
    """

    __slots__ = ("_checked", "_direct", "_max_attributes", "_tracer")

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._direct = False
        self._checked: object = _NOTHING
        self._max_attributes = -1
        if SdkTracer is None or not isinstance(tracer, SdkTracer):
            return
        try:
            limits = tracer._span_limits
            metrics_off = type(tracer._tracer_metrics) is NoOpTracerMetrics
            tracer._tracer_config.is_enabled  # noqa: B018 - present in the SDKs we know
            tracer._instrumentation_scope  # noqa: B018
        except AttributeError:  # pragma: no cover - another SDK version: its own path
            return
        # The span value-length limit defaults to the general one: None means no cut at all.
        if (
            not SPAN_CONTEXT_FIELDS
            or not metrics_off
            or limits.max_span_attribute_length is not None
        ):
            return
        most = limits.max_span_attributes
        self._max_attributes = 1 << 30 if most is None else most
        self._direct = True

    @property
    def direct(self) -> bool:
        """Whether spans currently skip the live-span machinery (for tests and benchmarks)."""
        return self._processors() is not None

    def record(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        start_ns: int,
        end_ns: int | None = None,
        context: Context | None = None,
        error: str | None = None,
    ) -> None:
        """Report one operation that ran from ``start_ns`` to ``end_ns`` (None: now)."""
        if end_ns is None:
            end_ns = time_ns()
        tracer: Any = self._tracer
        if self._direct and len(attributes) <= self._max_attributes:
            processor = tracer.span_processor
            if getattr(processor, "_span_processors", None) is not self._checked:
                processor = self._processors()
        else:
            processor = None
        if processor is None:
            self._through_sdk(name, kind, attributes, start_ns, end_ns, context, error)
            return
        if not tracer._tracer_config.is_enabled:
            return
        if SPAN_KEY is not None:
            current: Any = (context if context is not None else get_current()).get(SPAN_KEY)
            parent = None if current is None else current.get_span_context()
        else:  # pragma: no cover - another API version
            parent = get_current_span(context).get_span_context()
        id_generator = tracer.id_generator
        if parent is not None:
            trace_id, _, remote, parent_flags, parent_state, valid = parent
            if not valid:
                parent = None
        if parent is None:
            trace_id = id_generator.generate_trace_id()
            random_id = id_generator.is_trace_id_random()
        else:
            random_id = parent_flags & TraceFlags.RANDOM_TRACE_ID
        sampler = tracer.sampler
        delegate: Any = None
        if type(sampler) in _PARENT_BASED_TYPES and _PARENT_BASED:
            if parent is None:
                delegate = sampler._root
                if type(delegate) is TraceIdRatioBased:  # its rule, on the id just made
                    limit = TraceIdRatioBased.TRACE_ID_LIMIT
                    delegate = ALWAYS_ON if trace_id & limit < delegate.bound else ALWAYS_OFF
            elif parent_flags & TraceFlags.SAMPLED:
                remote_, local = sampler._remote_parent_sampled, sampler._local_parent_sampled
                delegate = remote_ if remote else local
            else:
                remote_, local = (
                    sampler._remote_parent_not_sampled,
                    sampler._local_parent_not_sampled,
                )
                delegate = remote_ if remote else local
        if delegate is ALWAYS_ON:  # what ParentBased decides, without asking it
            flags = TraceFlags.SAMPLED
            trace_state = None if parent is None else parent_state
        elif delegate is ALWAYS_OFF:
            return
        else:
            sampled = sampler.should_sample(context, trace_id, name, kind, attributes, ())
            decision = sampled.decision
            if not decision.is_recording():
                return
            flags = TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT
            trace_state = sampled.trace_state
            if len(sampled.attributes) > self._max_attributes:  # the sampler added too many
                self._through_sdk(name, kind, attributes, start_ns, end_ns, context, error)
                return
            attributes = sampled.attributes
        if random_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        if type(id_generator) is RandomIdGenerator:  # what it does, without the call
            span_id = getrandbits(64) or id_generator.generate_span_id()
        else:
            span_id = id_generator.generate_span_id()
        # The tuple SpanContext's constructor builds, with the validity it would compute.
        span_context = tuple.__new__(
            SpanContext,
            (
                trace_id,
                span_id,
                False,
                _FLAGS[flags],
                DEFAULT_TRACE_STATE if trace_state is None else trace_state,
                0 < trace_id < _TRACE_ID_END and 0 < span_id < _SPAN_ID_END,
            ),
        )
        span = ReadableSpan(
            name,
            span_context,
            parent,
            tracer.resource,
            attributes,
            kind=kind,
            instrumentation_info=tracer.instrumentation_info,
            status=_UNSET if error is None else Status(StatusCode.ERROR, error),
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=tracer._instrumentation_scope,
        )
        if type(processor) is SynchronousMultiSpanProcessor:
            for member in self._checked:  # type: ignore[attr-defined]  # its on_end, inlined
                member.on_end(span)
        else:
            processor.on_end(span)

    def _processors(self) -> Any:
        """The provider's processor, when every processor in it is quiet; else None."""
        if not self._direct:
            return None
        processor: Any = self._tracer.span_processor  # type: ignore[attr-defined]
        members = getattr(processor, "_span_processors", None)
        if members is self._checked:
            return processor
        if not isinstance(processor, _MULTI) or not isinstance(members, tuple):
            return None
        if not all(_quiet(member) for member in members):
            return None
        self._checked = members  # the provider replaces the tuple when one is added
        return processor

    def _through_sdk(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        start_ns: int,
        end_ns: int,
        context: Context | None,
        error: str | None,
    ) -> None:
        span = self._tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, start_time=start_ns
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end_ns)
