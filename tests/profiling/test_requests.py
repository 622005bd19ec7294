"""Route hooks through a real Starlette app, wired as the HTTP middleware wires them."""

from __future__ import annotations

import asyncio
import json
import marshal
import sys
from pathlib import Path
from typing import Any

import pytest

from otelperf.testing import ASGIResponse, asgi_request
from tests.profiling.harness import TOKEN, BoomError, Rig, rig


def _get(r: Rig, *paths: str, headers: dict[str, str] | None = None) -> None:
    async def main() -> None:
        for target in paths:
            path, _, query = target.partition("?")
            response = await asgi_request(r.app, "GET", path, query=query, headers=headers)
            assert response.status == 200, (target, response.status)

    asyncio.run(main())


def _speedscope_names(directory: Path, profile_id: str) -> set[str]:
    data = json.loads((directory / f"{profile_id}.speedscope.json").read_text())
    return {frame["name"] for frame in data["shared"]["frames"]}


@pytest.mark.parametrize(
    ("path", "function", "awaiting"),
    [("/reports/cpu", "crunch_numbers", False), ("/reports/io", "fetch_slowly", True)],
    ids=["cpu-bound", "await-bound"],
)
def test_slow_route_has_its_own_slow_function_as_top_frame(
    tmp_path: Path, path: str, function: str, awaiting: bool
) -> None:
    """A slow route's profile names its slow function first, with files, event and metric."""
    with rig(tmp_path, {"hooks": [{"name": "reports", "route": "/reports/*"}]}) as r:
        _get(r, path)
        (event,) = r.events()
        top = event["otelperf.profile.top_frames"]
        assert top[0].startswith(f"{function} (tests/profiling/harness.py:"), top
        own = event["otelperf.profile.top_frames.self_time"][0]
        waited = event["otelperf.profile.top_frames.await_time"][0]
        assert 0.1 <= own < 1.0
        if awaiting:
            assert waited >= 0.9 * own
        else:
            assert waited < 0.1 * own
        (profile_id,) = r.profile_ids()
        assert event["otelperf.profile.id"] == profile_id
        assert event["otelperf.profile.hook"] == "reports"
        meta = r.meta(profile_id)
        (span,) = r.telemetry.spans()
        assert meta["trace_id"] == f"{span.context.trace_id:032x}"
        assert meta["target"] == path
        assert meta["kind"] == "request"
        assert meta["status"] == 200
        assert meta["top_frames"][0]["function"] == function
        assert function in _speedscope_names(r.directory, profile_id)
        html = (r.directory / f"{profile_id}.html").read_text()
        assert html.lstrip().lower().startswith("<!doctype html")
        assert r.count("kept", "reports") == 1


def test_fast_route_below_min_duration_leaves_no_file(tmp_path: Path) -> None:
    """A request faster than min_duration is counted too_fast and leaves no file or event."""
    with rig(tmp_path, {"hooks": [{"route": "/fast", "min_duration": "200ms"}]}) as r:
        _get(r, "/fast", "/fast")
        r.profiling.flush(10)
        assert list(r.directory.iterdir()) == []
        assert r.events() == []
        assert r.count("too_fast", "/fast") == 2
        assert r.count("kept") == 0


def test_unselected_request_starts_no_profiler(tmp_path: Path) -> None:
    """A path no glob could match gets no session, and no profiler runs for it."""
    with rig(tmp_path, {"hooks": [{"route": "/reports/*"}]}) as r:
        scope: dict[str, Any] = {"type": "http", "path": "/fast", "headers": []}
        assert r.profiling.begin(scope) is None
        assert sys.getprofile() is None
        _get(r, "/fast", "/items/42")
        assert r.profile_ids() == []
        assert r.telemetry.points("otelperf.profile.captured") == []


def test_sample_rate_zero_never_profiles(tmp_path: Path) -> None:
    """A hook sampling 0% never starts a profile for the requests it matches."""
    with rig(tmp_path, {"hooks": [{"route": "/reports/*", "sample_rate": 0}]}) as r:
        _get(r, "/reports/cpu?s=0.01", "/reports/cpu?s=0.01")
        assert r.profile_ids() == []
        assert r.telemetry.points("otelperf.profile.captured") == []


def test_route_glob_is_matched_against_the_template(tmp_path: Path) -> None:
    """A template glob selects its requests; a literal route it pre-matched is unmatched."""
    with rig(tmp_path, {"hooks": [{"name": "items", "route": "/items/{item_id}"}]}) as r:
        _get(r, "/items/42", "/items/special")
        (profile_id,) = r.profile_ids()
        assert r.meta(profile_id)["target"] == "/items/{item_id}"
        assert r.count("kept", "items") == 1
        assert r.count("unmatched", "items") == 1


def test_first_matching_hook_decides(tmp_path: Path) -> None:
    """With overlapping globs, the first hook in order decides, even when it samples out."""
    hooks = [
        {"name": "never", "route": "/reports/io", "sample_rate": 0},
        {"name": "all", "route": "/reports/*"},
    ]
    with rig(tmp_path, {"hooks": hooks}) as r:
        _get(r, "/reports/io?s=0.01", "/reports/cpu?s=0.01")
        (profile_id,) = r.profile_ids()
        assert r.meta(profile_id)["target"] == "/reports/cpu"
        assert r.count("kept", "all") == 1
        assert r.count("kept", "never") == 0


def test_failing_route_is_still_profiled(tmp_path: Path) -> None:
    """A request whose handler raises keeps its profile, with status 500 in the metadata."""
    with rig(tmp_path, {"hooks": [{"route": "/reports/*"}]}) as r:

        async def main() -> None:
            with pytest.raises(BoomError):
                await asgi_request(r.app, "GET", "/reports/boom")

        asyncio.run(main())
        (profile_id,) = r.profile_ids()
        meta = r.meta(profile_id)
        assert meta["status"] == 500
        assert meta["target"] == "/reports/boom"
        assert meta["top_frames"][0]["function"] == "crunch_numbers"


def test_request_without_route_is_not_selected(tmp_path: Path) -> None:
    """A 404 has no route template: a profile started on its path is discarded as unmatched."""
    with rig(tmp_path, {"hooks": [{"route": "/reports/*"}]}) as r:

        async def main() -> None:
            response = await asgi_request(r.app, "GET", "/reports/nowhere")
            assert response.status == 404

        asyncio.run(main())
        assert r.profile_ids() == []
        assert r.count("unmatched", "/reports/*") == 1


def test_overlapping_pyinstrument_requests_each_attribute_their_own_work(tmp_path: Path) -> None:
    """Two overlapping slow requests yield two profiles, each holding only its own work."""
    with rig(tmp_path, {"hooks": [{"name": "overlap", "route": "/overlap/*"}]}) as r:

        async def main() -> None:
            await asyncio.gather(
                asgi_request(r.app, "GET", "/overlap/a"), asgi_request(r.app, "GET", "/overlap/b")
            )

        asyncio.run(main())
        ids = r.profile_ids()
        assert len(ids) == 2
        by_target = {r.meta(i)["target"]: i for i in ids}
        names_a = _speedscope_names(r.directory, by_target["/overlap/a"])
        names_b = _speedscope_names(r.directory, by_target["/overlap/b"])
        assert "crunch_numbers" in names_a
        assert "grind_other_numbers" not in names_a
        assert "grind_other_numbers" in names_b
        assert "crunch_numbers" not in names_b
        tops = {r.meta(i)["target"]: r.meta(i)["top_frames"] for i in ids}
        own_a = {f["function"]: f["self_time"] for f in tops["/overlap/a"]}
        # Its own 0.12 s of work, not the other request's on top.
        assert 0.1 <= own_a["crunch_numbers"] < 0.2
        assert r.count("kept", "overlap") == 2


def test_overlapping_cprofile_requests_skip_and_count_the_second(tmp_path: Path) -> None:
    """cProfile runs one profile at a time: the overlapping request is skipped and counted."""
    hooks = [{"name": "overlap", "route": "/overlap/*", "engine": "cprofile"}]
    with rig(tmp_path, {"hooks": hooks}) as r:

        async def main() -> None:
            await asyncio.gather(
                asgi_request(r.app, "GET", "/overlap/a"), asgi_request(r.app, "GET", "/overlap/b")
            )

        asyncio.run(main())
        (profile_id,) = r.profile_ids()
        assert r.meta(profile_id)["target"] == "/overlap/a"
        assert r.count("kept", "overlap") == 1
        assert r.count("skipped", "overlap") == 1
        assert sorted(p.name.split(".", 1)[1] for p in r.directory.iterdir()) == ["json", "pstats"]
        stats = marshal.loads((r.directory / f"{profile_id}.pstats").read_bytes())
        names = {name for (_, _, name) in stats}
        # As documented: cProfile sees the whole thread, so the kept profile also holds
        # the work the skipped request did while this one awaited.
        assert {"crunch_numbers", "grind_other_numbers"} <= names


def test_sequential_cprofile_requests_are_all_profiled(tmp_path: Path) -> None:
    """Once a cProfile request ends, the next one is profiled: the engine is released."""
    with rig(tmp_path, {"hooks": [{"route": "/reports/*", "engine": "cprofile"}]}) as r:
        _get(r, "/reports/cpu?s=0.02", "/reports/cpu?s=0.02")
        assert len(r.profile_ids()) == 2
        (first, _) = r.events()
        assert first["otelperf.profile.top_frames"][0].startswith("crunch_numbers (")
        assert "otelperf.profile.top_frames.await_time" not in first


def test_app_under_a_root_path_is_matched_on_its_route_path(tmp_path: Path) -> None:
    """Behind a server root_path, globs match the path the router sees (the endpoint too)."""
    config = {
        "hooks": [{"route": "/reports/*"}],
        "on_demand": {"token": TOKEN},
        "endpoint": {"enabled": True},
    }
    with rig(tmp_path, config) as r:
        inner = r.app

        async def under_api(scope: Any, receive: Any, send: Any) -> None:
            scope = {**scope, "root_path": "/api", "path": "/api" + scope["path"]}
            await inner(scope, receive, send)

        async def main() -> tuple[ASGIResponse, ASGIResponse]:
            cpu = await asgi_request(under_api, "GET", "/reports/cpu", query="s=0.01")
            r.profiling.flush(10)  # listed once written
            listing = await asgi_request(
                under_api, "GET", "/_otelperf/profiles", headers={"x-otelperf-profile": TOKEN}
            )
            return cpu, listing

        cpu, listing = asyncio.run(main())
        assert cpu.status == 200
        (profile_id,) = r.profile_ids()
        assert r.meta(profile_id)["target"] == "/reports/cpu"
        (listed,) = json.loads(listing.body)["profiles"]
        assert listed["urls"]["metadata"] == f"/api/_otelperf/profiles/{profile_id}.json"
