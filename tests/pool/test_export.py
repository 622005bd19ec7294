"""Query spans, recorded whole, and the pool's histograms reach a real OTLP receiver."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import otelperf
from tests.otlp_receiver import OtlpReceiver


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_query_spans_and_pool_metrics_are_exported(
    otlp_receiver: OtlpReceiver, postgres_dsn: str, protocol: str
) -> None:
    """Each query's span sits under the request span; pool histograms carry every point."""
    endpoint = otlp_receiver.grpc_endpoint if protocol == "grpc" else otlp_receiver.http_endpoint
    perf = otelperf.load(
        {
            "version": 1,
            "service": {"name": "pool-export"},
            "telemetry": {
                "exporter": "otlp",
                "otlp": {"endpoint": endpoint, "protocol": protocol},
                "traces": {"schedule_delay": "100ms"},
                "metrics": {"interval": "200ms"},
                "set_global": False,
            },
            "runtime": {"process": False, "event_loop_lag": False},
            "pools": {"main": {"conninfo": postgres_dsn, "min_size": 1, "max_size": 2}},
        }
    )

    async def run() -> tuple[str, int]:
        async with perf:
            with perf.tracer.start_as_current_span("GET /orders") as request:
                for _ in range(5):
                    async with perf.pool("main").connection() as conn:
                        await conn.execute("SELECT 1")
            return format(request.get_span_context().span_id, "016x"), 5

    request_id, queries = asyncio.run(run())
    spans = [span for _, span in otlp_receiver.spans()]
    selects = [span for span in spans if span.name == "SELECT"]
    assert len(selects) == queries
    assert all(span.parent_span_id.hex() == request_id for span in selects)
    assert all(span.end_time_unix_nano > span.start_time_unix_nano for span in selects)
    attributes: dict[str, Any] = {a.key: a.value for a in selects[0].attributes}
    assert attributes["db.system.name"].string_value == "postgresql"
    assert attributes["db.operation.name"].string_value == "SELECT"
    points: dict[str, int] = {}
    for _, metric in otlp_receiver.metrics():  # cumulative: the last export has them all
        count = sum(p.count for p in metric.histogram.data_points)
        points[metric.name] = max(points.get(metric.name, 0), count)
    assert points["db.client.operation.duration"] == queries
    assert points["db.client.connection.wait_time"] == queries
    assert points["db.client.connection.use_time"] == queries


def test_capture_sees_a_query_before_the_loop_turns(postgres_dsn: str) -> None:
    """otelperf.testing.capture() reports deferred query telemetry before it answers."""
    from otelperf.testing import capture

    async def run() -> tuple[list[str], int]:
        config = {
            "version": 1,
            "service": {"name": "t"},
            "pools": {"main": {"conninfo": postgres_dsn, "min_size": 1, "max_size": 1}},
        }
        with capture(config) as captured:
            async with captured.perf, captured.perf.pool("main").connection() as conn:
                await conn.execute("SELECT 1")
                names = [span.name for span in captured.spans()]  # no await in between
                (point,) = captured.points("db.client.operation.duration")
                return names, point.count

    names, count = asyncio.run(run())
    assert names == ["SELECT"]
    assert count == 1
