"""Every metric otelperf emits, declared once: name, instrument, unit, attributes, buckets.

Components create their instruments from these specs (:func:`create`), and
``docs/metrics.md`` is generated from :data:`REGISTRY`, so the documented table and
the emitted metrics cannot drift apart. Names follow the stable OpenTelemetry
semantic conventions where one exists, and live under ``otelperf.`` otherwise.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["REGISTRY", "InstrumentSpec", "create", "render_markdown", "spec"]

Kind = Literal[
    "counter",
    "up_down_counter",
    "histogram",
    "observable_counter",
    "observable_up_down_counter",
    "observable_gauge",
]

HTTP_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
"""The stable HTTP semantic conventions' advised boundaries."""

SECONDS_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""100 µs to 10 s: fits cache hits, queries and requests alike (histograms in seconds)."""

BYTES_BUCKETS: tuple[float, ...] = tuple(float(4**i) for i in range(3, 15))
"""64 B to 256 MiB, a factor of 4 apart."""


@dataclass(frozen=True)
class InstrumentSpec:
    """One metric: what it is called, what it measures and which attributes it carries."""

    name: str
    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...]
    component: str
    buckets: tuple[float, ...] | None = None


_HTTP_ATTRS = (
    "http.request.method",
    "url.scheme",
    "http.route",
    "http.response.status_code",
    "error.type",
    "network.protocol.version",
)

REGISTRY: dict[str, InstrumentSpec] = {
    s.name: s
    for s in (
        InstrumentSpec(
            "http.server.request.duration",
            "histogram",
            "s",
            "Duration of HTTP server requests.",
            _HTTP_ATTRS,
            "http",
            HTTP_DURATION_BUCKETS,
        ),
        InstrumentSpec(
            "http.server.active_requests",
            "observable_up_down_counter",
            "{request}",
            "Number of active HTTP server requests.",
            ("http.request.method", "url.scheme"),
            "http",
        ),
        InstrumentSpec(
            "http.server.request.body.size",
            "histogram",
            "By",
            "Size of HTTP server request bodies (requests that carry one).",
            _HTTP_ATTRS,
            "http",
            BYTES_BUCKETS,
        ),
        InstrumentSpec(
            "http.server.response.body.size",
            "histogram",
            "By",
            "Size of HTTP server response bodies.",
            _HTTP_ATTRS,
            "http",
            BYTES_BUCKETS,
        ),
        InstrumentSpec(
            "otelperf.http.slo.requests",
            "observable_counter",
            "{request}",
            "Requests judged against an SLO: `otelperf.slo` is latency or availability, "
            "`otelperf.slo.result` good or bad; `http.route` is absent on the service-wide series.",
            ("otelperf.slo", "otelperf.slo.result", "http.route"),
            "http",
        ),
        InstrumentSpec(
            "otelperf.http.compression.saved",
            "observable_counter",
            "By",
            "Response bytes saved by compression, by content encoding.",
            ("http.response.header.content-encoding",),
            "http",
        ),
        InstrumentSpec(
            "otelperf.http.websocket.duration",
            "histogram",
            "s",
            "Duration of websocket connections.",
            ("http.route", "url.scheme"),
            "http",
        ),
    )
}


def register(*specs: InstrumentSpec) -> None:
    """Add component instruments to the registry (at import of the component)."""
    for item in specs:
        existing = REGISTRY.get(item.name)
        if existing is not None and existing != item:
            raise ValueError(f"instrument {item.name!r} declared twice with different specs")
        REGISTRY[item.name] = item


def spec(name: str) -> InstrumentSpec:
    """The declared spec of ``name``; a KeyError names an undeclared metric."""
    return REGISTRY[name]


_FAST: weakref.WeakKeyDictionary[Any, Callable[[InstrumentSpec], Any]] = weakref.WeakKeyDictionary()


def bind_fast(meter: Meter, factory: Callable[[InstrumentSpec], Any]) -> None:
    """Route the histograms later created on ``meter`` to ``factory`` (a cheaper aggregation).

    The returned objects keep the API's ``record(amount, attributes)`` signature, so
    components stay written against the OpenTelemetry API.
    """
    _FAST[meter] = factory


def create(
    meter: Meter,
    name: str,
    callbacks: Sequence[Callable[[CallbackOptions], Iterable[Observation]]] = (),
) -> Any:
    """Create the instrument ``name`` on ``meter`` exactly as declared."""
    item = REGISTRY[name]
    if item.kind == "histogram":
        try:
            fast = _FAST.get(meter)
        except TypeError:  # a meter that cannot be weakly referenced
            fast = None
        if fast is not None:
            return fast(item)
    if item.kind == "counter":
        return meter.create_counter(item.name, unit=item.unit, description=item.description)
    if item.kind == "up_down_counter":
        return meter.create_up_down_counter(item.name, unit=item.unit, description=item.description)
    if item.kind == "histogram":
        return meter.create_histogram(
            item.name,
            unit=item.unit,
            description=item.description,
            explicit_bucket_boundaries_advisory=item.buckets,
        )
    factory = {
        "observable_counter": meter.create_observable_counter,
        "observable_up_down_counter": meter.create_observable_up_down_counter,
        "observable_gauge": meter.create_observable_gauge,
    }[item.kind]
    return factory(
        item.name, callbacks=list(callbacks), unit=item.unit, description=item.description
    )


def render_markdown() -> str:
    """The metrics table of ``docs/metrics.md``."""
    lines = [
        "# Metrics",
        "",
        "<!-- Generated from the instrument registry by `python -m otelperf._docgen`;",
        "     tests/test_docs.py fails when this file and the registry disagree. -->",
        "",
        "Every metric otelperf emits. Histograms carry exemplars (the trace and span id",
        "of a sampled measurement), so a slow bucket leads to a trace.",
        "",
        "| name | instrument | unit | attributes | component | description |",
        "|---|---|---|---|---|---|",
    ]
    for item in sorted(REGISTRY.values(), key=lambda s: (s.component, s.name)):
        attrs = ", ".join(f"`{a}`" for a in item.attributes) or "none"
        lines.append(
            f"| `{item.name}` | {item.kind.replace('_', ' ')} | `{item.unit}` | {attrs} "
            f"| {item.component} | {item.description} |"
        )
    return "\n".join(lines) + "\n"
