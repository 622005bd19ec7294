"""Profiling wired into the real middleware through perf.wrap."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelperf
from otelperf.profiling import PROFILE_EVENT, PROFILE_ID_HEADER
from otelperf.testing import asgi_lifespan, asgi_request
from tests.profiling.harness import make_app

TOKEN = "t0ken-for-tests-0123456789"


def _perf(tmp_path: Path, exporter: InMemorySpanExporter) -> otelperf.Perf:
    config: dict[str, Any] = {
        "version": 1,
        "service": {"name": "profiled"},
        "telemetry": {"exporter": "none", "set_global": False},
        "runtime": {"process": False, "event_loop_lag": False},
        "profiling": {
            "output_dir": str(tmp_path / "profiles"),
            "hooks": [{"route": "/reports/*", "sample_rate": 1.0, "min_duration": "50ms"}],
            "on_demand": {"token": TOKEN},
        },
    }
    return otelperf.load(config, span_processors=[SimpleSpanProcessor(exporter)])


def test_slow_route_profiled_through_perf_wrap(tmp_path: Path) -> None:
    """A slow request selected by a route hook gets a profile event naming its own hot function."""
    exporter = InMemorySpanExporter()
    perf = _perf(tmp_path, exporter)
    app = perf.wrap(make_app())

    async def drive() -> None:
        async with asgi_lifespan(app):
            assert (await asgi_request(app, "GET", "/reports/cpu")).status == 200
            assert perf.resources.profiling is not None
            perf.resources.profiling.flush(5.0)

    asyncio.run(drive())
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "GET /reports/cpu"]
    (event,) = [e for e in span.events if e.name == PROFILE_EVENT]
    attrs: dict[str, Any] = dict(event.attributes or {})
    assert str(attrs[f"{PROFILE_EVENT}.top_frames"][0]).startswith("crunch_numbers (")
    profile_id = attrs[f"{PROFILE_EVENT}.id"]
    assert (tmp_path / "profiles" / f"{profile_id}.speedscope.json").exists()


def test_on_demand_header_profiles_and_answers_with_the_id(tmp_path: Path) -> None:
    """A request with the right token is profiled and its response names the profile id."""
    exporter = InMemorySpanExporter()
    perf = _perf(tmp_path, exporter)
    app = perf.wrap(make_app())

    async def drive() -> tuple[str | None, str | None]:
        async with asgi_lifespan(app):
            good = await asgi_request(app, "GET", "/fast", headers={"x-otelperf-profile": TOKEN})
            bad = await asgi_request(app, "GET", "/fast", headers={"x-otelperf-profile": "nope"})
            header = PROFILE_ID_HEADER.decode()
            return good.header(header), bad.header(header)

    good_id, bad_id = asyncio.run(drive())
    assert good_id
    assert bad_id is None
    for span in exporter.get_finished_spans():
        assert TOKEN not in repr(dict(span.attributes or {}))
