"""Function hooks: ``module:qualname`` from the config, ``profile(hook)`` as decorator and block."""

from __future__ import annotations

import asyncio
import inspect
import marshal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from opentelemetry.trace import StatusCode

from otelperf._component import ComponentTelemetry
from otelperf._errors import OtelperfError
from otelperf.config import load_config
from otelperf.profiling import Profiling
from otelperf.testing import asgi_request
from tests.profiling import targets
from tests.profiling.harness import Rig, crunch_numbers, rig

BUILD = "tests.profiling.targets:build_report"


def _only_span(r: Rig, name: str) -> Any:
    (span,) = r.telemetry.spans(name)
    return span


def _event(span: Any) -> dict[str, Any]:
    """The attributes of the span's profile event."""
    (event,) = [e for e in span.events if e.name == "otelperf.profile"]
    return dict(event.attributes)


def test_function_hook_profiles_calls_and_is_undone_at_close(tmp_path: Path) -> None:
    """A module:qualname hook wraps the function at startup and restores it at close."""
    original = targets.build_report
    hooks = [{"name": "build", "function": BUILD, "engine": "cprofile"}]
    with rig(tmp_path, {"hooks": hooks}) as r:
        assert targets.build_report is not original
        assert targets.build_report(0.05) > 0
        (profile_id,) = r.profile_ids()
        span = _only_span(r, "build_report")
        assert span.attributes["code.function.name"] == "tests.profiling.targets.build_report"
        (event,) = span.events
        assert event.attributes["otelperf.profile.id"] == profile_id
        assert event.attributes["otelperf.profile.top_frames"][0].startswith(
            "build_report (tests/profiling/targets.py:"
        )
        stats = marshal.loads((r.directory / f"{profile_id}.pstats").read_bytes())
        assert any(name == "build_report" for (_, _, name) in stats)
        meta = r.meta(profile_id)
        assert meta["kind"] == "function"
        assert meta["engine"] == "cprofile"
        assert meta["target"] == "tests.profiling.targets.build_report"
        r.profiling.close()
        assert targets.build_report is original


@pytest.mark.parametrize("method", ["reprice", "quote", "batch"])
def test_function_hook_wraps_methods_of_every_kind(tmp_path: Path, method: str) -> None:
    """Plain, static and class methods are wrapped as such, and restored as they were."""
    raw = inspect.getattr_static(targets.Pricing, method)
    hooks = [{"function": f"tests.profiling.targets:Pricing.{method}"}]
    with rig(tmp_path, {"hooks": hooks}) as r:
        wrapped = inspect.getattr_static(targets.Pricing, method)
        assert wrapped is not raw
        assert type(wrapped) is type(raw)
        assert getattr(targets.Pricing(), method)(0.1) > 0
        (profile_id,) = r.profile_ids()
        meta = r.meta(profile_id)
        assert meta["target"] == f"tests.profiling.targets.Pricing.{method}"
        assert meta["top_frames"][0]["function"] == "build_report"
    assert inspect.getattr_static(targets.Pricing, method) is raw


def test_async_function_hook_follows_awaits(tmp_path: Path) -> None:
    """An async function hook charges its await time to the function itself."""
    hooks = [{"function": "tests.profiling.targets:render_report"}]
    with rig(tmp_path, {"hooks": hooks}) as r:
        assert asyncio.run(targets.render_report(0.1)) == "rendered"
        (event,) = _only_span(r, "render_report").events
        attrs = event.attributes
        assert attrs["otelperf.profile.top_frames"][0].startswith("render_report (")
        assert attrs["otelperf.profile.top_frames.await_time"][0] >= 0.09


def test_decorator_profiles_sync_and_async_functions(tmp_path: Path) -> None:
    """``@profile(hook)`` wraps sync and async functions, keeping names and results."""
    hooks = [{"name": "crunch", "engine": "cprofile"}, {"name": "wait"}]
    with rig(tmp_path, {"hooks": hooks}) as r:

        @r.profiling.profile("crunch")
        def crunch(seconds: float) -> int:
            """Docstring kept."""
            return crunch_numbers(seconds)

        @r.profiling.profile("wait")
        async def wait(seconds: float) -> str:
            await asyncio.sleep(seconds)
            return "waited"

        assert crunch.__name__ == "crunch"
        assert crunch.__doc__ == "Docstring kept."
        assert inspect.iscoroutinefunction(wait)
        assert crunch(0.03) > 0
        assert asyncio.run(wait(0.05)) == "waited"
        assert r.profiling.profile("crunch")(crunch) is crunch  # never wrapped twice
        hooks_kept = sorted(r.meta(i)["hook"] for i in r.profile_ids())
        assert hooks_kept == ["crunch", "wait"]
        crunch_span = _only_span(
            r, "test_decorator_profiles_sync_and_async_functions.<locals>.crunch"
        )
        assert (
            crunch_span.events[0]
            .attributes["otelperf.profile.top_frames"][0]
            .startswith("crunch_numbers (")
        )


def test_context_manager_profiles_blocks(tmp_path: Path) -> None:
    """``with`` / ``async with profile(hook)`` profile a block under a span named for the hook."""
    with rig(tmp_path, {"hooks": [{"name": "block"}]}) as r:
        with r.profiling.profile("block"):
            crunch_numbers(0.1)

        async def main() -> None:
            async with r.profiling.profile("block"):
                await asyncio.sleep(0.03)
            with r.profiling.profile("block"):  # a sync block in a coroutine may await too
                await asyncio.sleep(0.03)

        asyncio.run(main())
        spans = r.telemetry.spans("block")
        assert len(spans) == 3
        tops = [_event(s)["otelperf.profile.top_frames"][0] for s in spans]
        assert tops[0].startswith("crunch_numbers (")
        awaited = [_event(s)["otelperf.profile.top_frames.await_time"][0] for s in spans]
        assert awaited[1] >= 0.025
        assert awaited[2] >= 0.025
        assert r.count("kept", "block") == 3


def test_fast_call_is_counted_too_fast(tmp_path: Path) -> None:
    """A call shorter than min_duration leaves no profile and no event."""
    with rig(tmp_path, {"hooks": [{"name": "slow", "min_duration": "1s"}]}) as r:
        r.profiling.profile("slow")(crunch_numbers)(0.01)
        assert r.profile_ids() == []
        assert r.telemetry.spans()[0].events == ()
        assert r.count("too_fast", "slow") == 1


def test_raising_call_is_profiled_and_reraised(tmp_path: Path) -> None:
    """An exception propagates unchanged; the span records it and the profile is kept."""
    with rig(tmp_path, {"hooks": [{"name": "fails"}]}) as r:

        @r.profiling.profile("fails")
        def fails() -> None:
            crunch_numbers(0.02)
            raise KeyError("missing")

        with pytest.raises(KeyError, match="missing"):
            fails()
        span = r.telemetry.spans()[0]
        assert span.status.status_code is StatusCode.ERROR
        assert dict(span.attributes or {})["error.type"] == "KeyError"
        assert [e.name for e in span.events] == ["exception", "otelperf.profile"]
        assert len(r.profile_ids()) == 1


def test_calls_before_start_run_unprofiled(tmp_path: Path) -> None:
    """A decorated function called before startup (or after shutdown) just runs."""
    config = load_config(
        {
            "version": 1,
            "service": {"name": "x"},
            "profiling": {"output_dir": str(tmp_path / "p"), "hooks": [{"name": "early"}]},
        }
    )
    profiling = Profiling(config.profiling)
    work = profiling.profile("early")(crunch_numbers)
    assert work(0.001) >= 0
    assert not (tmp_path / "p").exists()


@pytest.fixture
def lonely(tmp_path: Path) -> Profiling:
    """A Profiling with a route hook and a name-only hook, not started."""
    config = load_config(
        {
            "version": 1,
            "service": {"name": "x"},
            "profiling": {
                "output_dir": str(tmp_path / "p"),
                "hooks": [{"route": "/r/*"}, {"name": "det", "engine": "cprofile"}],
            },
        }
    )
    return Profiling(config.profiling)


def test_profile_refuses_unknown_and_route_hooks(lonely: Profiling) -> None:
    """profile() names the usable hooks for an unknown name, and refuses route hooks."""
    with pytest.raises(OtelperfError, match=r"no profiling hook named 'nope' .*'det'"):
        lonely.profile("nope")
    with pytest.raises(OtelperfError, match="selects requests by route"):
        lonely.profile("/r/*")


def test_profile_refuses_what_it_cannot_profile(lonely: Profiling) -> None:
    """cProfile on an async function, and generators, are refused when decorating."""

    async def coroutine() -> None:
        pass

    def generator() -> Iterator[int]:
        yield 1

    with pytest.raises(OtelperfError, match="engine cprofile, which cannot tell the async"):
        lonely.profile("det")(coroutine)
    with pytest.raises(OtelperfError, match="cannot wrap the generator"):
        lonely.profile("det")(generator)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("tests.profiling.no_such_module:f", "module 'tests.profiling.no_such_module' cannot be"),
        ("tests.profiling.targets:missing", "'missing' not found"),
        ("tests.profiling.targets:Nope.f", "'Nope' not found"),
        ("tests.profiling.targets:NOT_A_FUNCTION", "is a int, not a function"),
    ],
)
def test_bad_function_hook_fails_startup_and_patches_nothing(
    tmp_path: Path, function: str, message: str
) -> None:
    """A function hook that cannot be applied fails startup, leaving the others unapplied."""
    original = targets.build_report
    config = load_config(
        {
            "version": 1,
            "service": {"name": "x"},
            "profiling": {
                "output_dir": str(tmp_path / "p"),
                "hooks": [{"function": BUILD}, {"function": function}],
            },
        }
    )
    profiling = Profiling(config.profiling)
    telemetry = ComponentTelemetry(cast(Any, _NoopTracer()), cast(Any, _NoopMeter()))
    with pytest.raises(OtelperfError, match=message):
        profiling.open(telemetry)
    assert targets.build_report is original
    assert not profiling.started


def test_sync_function_nests_inside_a_profiled_request(tmp_path: Path) -> None:
    """A sync function profiled inside a profiled request gets its own profile too."""
    hooks = [{"name": "inner"}, {"name": "request", "route": "/overlap/*"}]
    with rig(tmp_path, {"hooks": hooks}) as r:
        profiled = r.profiling.profile("inner")(targets.build_report)

        async def handler(scope: Any, receive: Any, send: Any) -> None:
            profiled(0.1)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        scope_route = _FakeRoute("/overlap/a")

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope["route"] = scope_route
            await handler(scope, receive, send)

        r.app.app = app
        asyncio.run(asgi_request(r.app, "GET", "/overlap/a"))
        kept = sorted(r.meta(i)["hook"] for i in r.profile_ids())
        assert kept == ["inner", "request"]
        for profile_id in r.profile_ids():
            assert r.meta(profile_id)["top_frames"][0]["function"] == "build_report"


def test_async_function_inside_a_profiled_request_is_skipped(tmp_path: Path) -> None:
    """pyinstrument runs one async profile per task: a nested async call is skipped, counted."""
    hooks = [{"name": "inner"}, {"name": "request", "route": "/overlap/*"}]
    with rig(tmp_path, {"hooks": hooks}) as r:
        profiled = r.profiling.profile("inner")(targets.render_report)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope["route"] = _FakeRoute("/overlap/a")
            await profiled(0.01)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        r.app.app = app
        asyncio.run(asgi_request(r.app, "GET", "/overlap/a"))
        assert [r.meta(i)["hook"] for i in r.profile_ids()] == ["request"]
        assert r.count("skipped", "inner") == 1


def test_cprofile_function_inside_a_pyinstrument_request(tmp_path: Path) -> None:
    """On Python < 3.12 the two engines share the thread's profile slot: the call is skipped."""
    hooks = [{"name": "det", "engine": "cprofile"}, {"name": "request", "route": "/overlap/*"}]
    with rig(tmp_path, {"hooks": hooks}) as r:
        profiled = r.profiling.profile("det")(targets.build_report)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope["route"] = _FakeRoute("/overlap/a")
            profiled(0.01)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        r.app.app = app
        asyncio.run(asgi_request(r.app, "GET", "/overlap/a"))
        kept = sorted(r.meta(i)["hook"] for i in r.profile_ids())
        if sys.version_info < (3, 12):
            assert kept == ["request"]
            assert r.count("skipped", "det") == 1
        else:
            assert kept == ["det", "request"]
        assert sys.getprofile() is None  # neither engine left a hook behind


def test_sync_function_in_a_worker_thread(tmp_path: Path) -> None:
    """A sync function run in a thread pool during a profiled request is profiled there."""
    hooks = [{"name": "inner"}, {"name": "request", "route": "/overlap/*"}]
    with rig(tmp_path, {"hooks": hooks}) as r:
        profiled = r.profiling.profile("inner")(targets.build_report)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope["route"] = _FakeRoute("/overlap/a")
            await asyncio.to_thread(profiled, 0.1)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        r.app.app = app
        asyncio.run(asgi_request(r.app, "GET", "/overlap/a"))
        metas = {r.meta(i)["hook"]: r.meta(i) for i in r.profile_ids()}
        assert metas["inner"]["top_frames"][0]["function"] == "build_report"
        # The request's own profile sees only the await on the thread (documented).
        functions = {f["function"] for f in metas["request"]["top_frames"]}
        assert "build_report" not in functions


class _FakeRoute:
    """What Starlette leaves in ``scope["route"]``: an object with a ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path


class _NoopTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no span expected")


class _NoopMeter:
    def create_counter(self, *args: Any, **kwargs: Any) -> Any:
        return None
