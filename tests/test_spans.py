"""SpanRecorder: the spans it records whole are the spans the SDK would have exported."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from otelperf._spans import SpanRecorder

ATTRS = {"db.system.name": "postgresql", "db.operation.name": "SELECT", "server.port": 5432}


class TaggingSampler(Sampler):
    """Samples everything and adds an attribute and a trace-state entry, as some samplers do."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE,
            {**(attributes or {}), "sampler.tag": name},
            TraceState([("vendor", "x")]),
        )

    def get_description(self) -> str:
        return "tagging"


class RecordOnly(Sampler):
    """Records without sampling: processors see the span, exporters drop it."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY)

    def get_description(self) -> str:
        return "record-only"


class StartTagger(SpanProcessor):
    """A processor that works on live spans (as the baggage processor does)."""

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        span.set_attribute("tagged.on_start", True)


class EndCounter(SpanProcessor):
    """Counts what reaches on_end, sampled or not."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def _provider(
    sampler: Sampler = ALWAYS_ON, **kwargs: Any
) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(
        sampler=sampler, resource=Resource.create({"service.name": "spans"}), **kwargs
    )
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _parent(
    *, sampled: bool = True, remote: bool = False, state: Sequence[tuple[str, str]] = ()
) -> Context:
    span_context = SpanContext(
        random.getrandbits(128),
        random.getrandbits(64),
        is_remote=remote,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        trace_state=TraceState(list(state)),
    )
    return set_span_in_context(NonRecordingSpan(span_context))


def _sdk(
    tracer: Any,
    name: str,
    attrs: dict[str, Any],
    start: int,
    end: int,
    ctx: Context | None,
    error: str | None,
) -> None:
    span = tracer.start_span(
        name, context=ctx, kind=SpanKind.CLIENT, attributes=attrs, start_time=start
    )
    if error is not None:
        span.set_status(trace.Status(trace.StatusCode.ERROR, error))
    span.end(end_time=end)


def _comparable(span: ReadableSpan, *, keep_trace: bool) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(span.to_json())
    data["context"].pop("span_id")
    if not keep_trace:  # a root span gets a fresh trace id on either path
        data["context"].pop("trace_id")
    return data


CASES = {
    "root, ratio sampler": (ParentBased(TraceIdRatioBased(1.0)), None, None),
    "under a sampled local parent": (ParentBased(ALWAYS_ON), {"sampled": True}, None),
    "under a sampled remote parent with trace state": (
        ParentBased(ALWAYS_ON),
        {"sampled": True, "remote": True, "state": [("congo", "t61rcWkgMzE")]},
        None,
    ),
    "failed operation": (ParentBased(ALWAYS_ON), {"sampled": True}, "23505"),
    "sampler adding attributes and state": (TaggingSampler(), {"sampled": True}, None),
    "unsampled parent, local_parent_not_sampled=ALWAYS_ON": (
        ParentBased(ALWAYS_OFF, local_parent_not_sampled=ALWAYS_ON),
        {"sampled": False},
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_recorded_span_equals_the_sdks(case: str) -> None:
    """Every exported field but the span id matches what start_span + end would export."""
    sampler, parent, error = CASES[case]
    provider, exporter = _provider(sampler)
    tracer = provider.get_tracer("otelperf.test", "1.0")
    recorder = SpanRecorder(tracer)
    assert recorder.direct
    ctx = _parent(**parent) if parent is not None else None
    recorder.record("SELECT t", SpanKind.CLIENT, ATTRS, 1_000, 5_000, ctx, error)
    _sdk(tracer, "SELECT t", ATTRS, 1_000, 5_000, ctx, error)
    ours, theirs = exporter.get_finished_spans()
    assert _comparable(ours, keep_trace=parent is not None) == _comparable(
        theirs, keep_trace=parent is not None
    )
    assert ours.context.trace_flags == theirs.context.trace_flags
    assert ours.context.span_id != theirs.context.span_id
    assert ours.instrumentation_scope == theirs.instrumentation_scope
    assert ours.resource is theirs.resource


@pytest.mark.parametrize(
    ("sampler", "parent"),
    [
        (ParentBased(ALWAYS_ON), {"sampled": False}),
        (ParentBased(TraceIdRatioBased(0.0)), None),
        (ALWAYS_OFF, {"sampled": True}),
    ],
    ids=["unsampled parent", "root sampled out", "always off"],
)
def test_dropped_when_the_sampler_drops(sampler: Sampler, parent: dict[str, Any] | None) -> None:
    """What the provider's sampler drops never reaches a processor, as with the SDK."""
    provider, exporter = _provider(sampler)
    counter = EndCounter()
    provider.add_span_processor(counter)
    recorder = SpanRecorder(provider.get_tracer("t"))
    recorder.record("GET", SpanKind.CLIENT, ATTRS, 1, 2, _parent(**parent) if parent else None)
    assert counter.ended == []
    assert exporter.get_finished_spans() == ()


def test_record_only_reaches_processors_unsampled() -> None:
    """A RECORD_ONLY decision hands processors an unsampled span; exporters skip it."""
    provider, exporter = _provider(RecordOnly())
    counter = EndCounter()
    provider.add_span_processor(counter)
    recorder = SpanRecorder(provider.get_tracer("t"))
    assert recorder.direct
    recorder.record("GET", SpanKind.CLIENT, ATTRS, 1, 2)
    assert len(counter.ended) == 1
    assert not counter.ended[0].context.trace_flags.sampled
    assert exporter.get_finished_spans() == ()


def test_root_span_flags_random_trace_id() -> None:
    """A root span carries a fresh trace id with the random-trace-id flag, as the SDK sets it."""
    provider, exporter = _provider()
    recorder = SpanRecorder(provider.get_tracer("t"))
    recorder.record("a", SpanKind.CLIENT, ATTRS, 1, 2)
    recorder.record("b", SpanKind.CLIENT, ATTRS, 1, 2)
    first, second = exporter.get_finished_spans()
    assert first.parent is None
    assert first.context.trace_id != second.context.trace_id
    assert first.context.trace_flags.sampled
    assert first.context.trace_flags.random_trace_id


def test_processor_with_on_start_takes_the_sdk_path() -> None:
    """A processor that acts on live spans gets them: the recorder falls back to the SDK."""
    provider, exporter = _provider()
    provider.add_span_processor(StartTagger())
    recorder = SpanRecorder(provider.get_tracer("t"))
    assert not recorder.direct
    recorder.record("GET", SpanKind.CLIENT, ATTRS, 1_000, 2_000, _parent())
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["tagged.on_start"] is True
    assert (span.start_time, span.end_time) == (1_000, 2_000)


def test_processor_added_later_is_noticed() -> None:
    """A processor added after the recorder was built is checked before the next span."""
    provider, exporter = _provider()
    recorder = SpanRecorder(provider.get_tracer("t"))
    assert recorder.direct
    recorder.record("first", SpanKind.CLIENT, ATTRS, 1, 2, _parent())
    provider.add_span_processor(StartTagger())
    assert not recorder.direct
    recorder.record("second", SpanKind.CLIENT, ATTRS, 1, 2, _parent())
    first, second = exporter.get_finished_spans()
    assert first.attributes is not None
    assert "tagged.on_start" not in first.attributes
    assert second.attributes is not None
    assert second.attributes["tagged.on_start"] is True


def test_batch_processor_stays_direct_and_exports() -> None:
    """Spans recorded whole go through a BatchSpanProcessor and reach its exporter."""

    class Keep(SpanExporter):
        def __init__(self) -> None:
            self.spans: list[ReadableSpan] = []

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.spans.extend(spans)
            return SpanExportResult.SUCCESS

    keep = Keep()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(keep))
    recorder = SpanRecorder(provider.get_tracer("t"))
    assert recorder.direct
    for _ in range(10):
        recorder.record("GET", SpanKind.CLIENT, ATTRS, 1, 2, _parent())
    provider.force_flush()
    assert len(keep.spans) == 10
    assert all(s.name == "GET" for s in keep.spans)
    provider.shutdown()


def test_attribute_limits_are_applied_by_the_sdk() -> None:
    """With a value-length limit set, values are truncated exactly as the SDK does it."""
    provider, exporter = _provider(span_limits=SpanLimits(max_attribute_length=4))
    recorder = SpanRecorder(provider.get_tracer("t"))
    assert not recorder.direct
    recorder.record("q", SpanKind.CLIENT, {"db.query.text": "SELECT 1"}, 1, 2, _parent())
    (span,) = exporter.get_finished_spans()
    assert span.attributes == {"db.query.text": "SELE"}


def test_too_many_attributes_for_the_limit_take_the_sdk_path() -> None:
    """More attributes than the count limit are dropped and counted by the SDK, not kept."""
    provider, exporter = _provider(span_limits=SpanLimits(max_span_attributes=2))
    recorder = SpanRecorder(provider.get_tracer("t"))
    recorder.record("q", SpanKind.CLIENT, ATTRS, 1, 2, _parent())
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert len(span.attributes) == 2
    assert span.dropped_attributes == 1


def test_sdk_internal_metrics_take_the_sdk_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the SDK's own span metrics on, spans go through start_span so they are counted."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    provider, exporter = _provider()
    recorder = SpanRecorder(provider.get_tracer("t"))
    assert not recorder.direct
    recorder.record("q", SpanKind.CLIENT, ATTRS, 1, 2, _parent())
    assert len(exporter.get_finished_spans()) == 1


def test_non_sdk_tracer_records_through_its_api() -> None:
    """A tracer that is not the SDK's (here the API's no-op) is used as is, without errors."""
    recorder = SpanRecorder(trace.NoOpTracer())
    assert not recorder.direct
    recorder.record("q", SpanKind.CLIENT, ATTRS, 1, 2, _parent(), "boom")


def test_shut_down_provider_drops_quietly() -> None:
    """After the provider shut down, recording neither raises nor exports."""
    provider, exporter = _provider()
    recorder = SpanRecorder(provider.get_tracer("t"))
    provider.shutdown()
    recorder.record("q", SpanKind.CLIENT, ATTRS, 1, 2, _parent())
    assert exporter.get_finished_spans() == ()


@contextmanager
def _current(ctx: Context) -> Iterator[None]:
    from opentelemetry import context as context_api

    token = context_api.attach(ctx)
    try:
        yield
    finally:
        context_api.detach(token)


def test_no_context_means_the_current_one() -> None:
    """Without an explicit context the span is a child of the current span."""
    provider, exporter = _provider()
    recorder = SpanRecorder(provider.get_tracer("t"))
    ctx = _parent()
    with _current(ctx):
        recorder.record("q", SpanKind.CLIENT, ATTRS, 1, 2)
    (span,) = exporter.get_finished_spans()
    parent = trace.get_current_span(ctx).get_span_context()
    assert span.parent == parent
    assert span.context.trace_id == parent.trace_id


def test_span_only_length_limit_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT alone still cuts values, as the SDK does."""
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    provider, exporter = _provider()
    recorder = SpanRecorder(provider.get_tracer("t"))
    assert not recorder.direct
    recorder.record("q", SpanKind.CLIENT, {"db.query.text": "SELECT 1"}, 1, 2, _parent())
    (span,) = exporter.get_finished_spans()
    assert span.attributes == {"db.query.text": "SELE"}


def test_sampler_attributes_past_the_count_limit_are_dropped() -> None:
    """Attributes a sampler adds beyond the count limit are dropped by the SDK, not kept."""
    provider, exporter = _provider(TaggingSampler(), span_limits=SpanLimits(max_span_attributes=3))
    recorder = SpanRecorder(provider.get_tracer("t"))
    assert recorder.direct
    recorder.record("q", SpanKind.CLIENT, ATTRS, 1, 2, _parent())
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert len(span.attributes) == 3
    assert span.dropped_attributes == 1


class ListedIds(IdGenerator):
    """Trace ids from a list (then again from its start), span ids counting up."""

    def __init__(self, trace_ids: list[int]) -> None:
        self.trace_ids = trace_ids
        self.next_trace = 0
        self.next_span = 0

    def generate_trace_id(self) -> int:
        trace_id = self.trace_ids[self.next_trace % len(self.trace_ids)]
        self.next_trace += 1
        return trace_id

    def generate_span_id(self) -> int:
        self.next_span += 1
        return self.next_span


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("subclass", [False, True], ids=["ParentBased", "ParentBasedTraceIdRatio"])
def test_root_ratio_decisions_equal_the_samplers(rate: float, subclass: bool) -> None:
    """For the same trace ids, root spans are kept or dropped exactly as the SDK decides."""
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    trace_ids = [random.getrandbits(128) or 1 for _ in range(400)]
    ours, theirs = ListedIds(trace_ids), ListedIds(trace_ids)
    sampler = ParentBasedTraceIdRatio(rate) if subclass else ParentBased(TraceIdRatioBased(rate))
    provider, exporter = _provider(sampler, id_generator=ours)
    sdk_provider, sdk_exporter = _provider(sampler, id_generator=theirs)
    recorder = SpanRecorder(provider.get_tracer("t"))
    assert recorder.direct
    for _ in trace_ids:
        recorder.record("q", SpanKind.CLIENT, ATTRS, 1, 2)
        _sdk(sdk_provider.get_tracer("t"), "q", ATTRS, 1, 2, None, None)
    kept = [s.context.trace_id for s in exporter.get_finished_spans()]
    assert kept == [s.context.trace_id for s in sdk_exporter.get_finished_spans()]
    expected = {0.0: 0, 1.0: len(trace_ids)}.get(rate)
    if expected is not None:
        assert len(kept) == expected
    else:
        assert 0 < len(kept) < len(trace_ids)


def test_span_context_layout_is_the_one_read() -> None:
    """The installed API's SpanContext unpacks as the direct path reads it (else it is off)."""
    from otelperf._spans import SPAN_CONTEXT_FIELDS

    assert SPAN_CONTEXT_FIELDS
    provider, _ = _provider()
    assert SpanRecorder(provider.get_tracer("t")).direct


def test_a_parent_based_subclass_of_its_own_is_asked() -> None:
    """A ParentBased subclass that decides differently is consulted, not second-guessed."""

    class Vetoing(ParentBased):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            return SamplingResult(Decision.DROP)

    provider, exporter = _provider(Vetoing(ALWAYS_ON))
    recorder = SpanRecorder(provider.get_tracer("t"))
    assert recorder.direct
    recorder.record("q", SpanKind.CLIENT, ATTRS, 1, 2, _parent())
    recorder.record("q", SpanKind.CLIENT, ATTRS, 1, 2)
    assert exporter.get_finished_spans() == ()
