"""On-demand profiling and the profile endpoint: the token opens both, and nothing else does."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from otelperf.testing import ASGIResponse, asgi_request
from tests.profiling.harness import TOKEN, Rig, rig

HEADER = "x-otelperf-profile"
ON_DEMAND: dict[str, Any] = {"on_demand": {"token": TOKEN}, "endpoint": {"enabled": True}}
LIST = "/_otelperf/profiles"


def _request(r: Rig, path: str, headers: dict[str, str] | None = None, **kw: Any) -> ASGIResponse:
    return asyncio.run(asgi_request(r.app, kw.pop("method", "GET"), path, headers=headers, **kw))


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {HEADER: "wrong-token-of-some-length-0123"},
        {HEADER: TOKEN[:-1]},
        {HEADER: TOKEN + "x"},
        {HEADER: ""},
        {"authorization": f"Bearer {TOKEN}"},
    ],
    ids=["missing", "wrong", "prefix", "longer", "empty", "other-header"],
)
def test_missing_or_wrong_token_profiles_nothing_and_opens_no_endpoint(
    tmp_path: Path, headers: dict[str, str] | None
) -> None:
    """Without the right token a request is not profiled and the endpoint is the app's 404."""
    with rig(tmp_path, ON_DEMAND) as r:
        assert _request(r, "/reports/cpu", headers, query="s=0.01").status == 200
        listing = _request(r, LIST, headers)
        served = _request(r, f"{LIST}/x.html", headers)
        assert (listing.status, listing.body) == (404, b"Not Found")  # Starlette's own 404
        assert (served.status, served.body) == (404, b"Not Found")
        assert r.profile_ids() == []
        assert r.events() == []
        assert r.telemetry.points("otelperf.profile.captured") == []
        # The same requests with the token do reach both: the test above could fail.
        assert _request(r, "/reports/cpu", {HEADER: TOKEN}, query="s=0.01").status == 200
        assert _request(r, LIST, {HEADER: TOKEN}).status == 200
        assert len(r.profile_ids()) == 1


def test_token_profiles_whatever_the_sampling_says(tmp_path: Path) -> None:
    """A request with the token is profiled even when every hook samples it out."""
    hooks = [{"route": "/reports/*", "sample_rate": 0, "min_duration": "10s"}]
    with rig(tmp_path, {**ON_DEMAND, "hooks": hooks}) as r:
        _request(r, "/reports/cpu", query="s=0.01")
        assert r.profile_ids() == []
        _request(r, "/reports/cpu", {HEADER: TOKEN}, query="s=0.05")
        (profile_id,) = r.profile_ids()
        meta = r.meta(profile_id)
        assert meta["hook"] == "on_demand"
        assert meta["target"] == "/reports/cpu"
        assert meta["top_frames"][0]["function"] == "crunch_numbers"
        assert r.count("kept", "on_demand") == 1


def test_on_demand_response_announces_the_profile_id(tmp_path: Path) -> None:
    """An on-demand response names its profile; a sampled or plain response names none."""
    with rig(tmp_path, {**ON_DEMAND, "hooks": [{"route": "/reports/*"}]}) as r:
        announced = _request(r, "/fast", {HEADER: TOKEN}).header("x-otelperf-profile-id")
        sampled = _request(r, "/reports/cpu", query="s=0.01")
        assert sampled.header("x-otelperf-profile-id") is None
        assert _request(r, "/fast").header("x-otelperf-profile-id") is None
        on_demand = [i for i in r.profile_ids() if r.meta(i)["hook"] == "on_demand"]
        assert on_demand == [announced]
        served = _request(r, f"{LIST}/{announced}.json", {HEADER: TOKEN})
        assert json.loads(served.body)["id"] == announced


def test_header_name_is_configurable_and_case_insensitive(tmp_path: Path) -> None:
    """The configured header (written in any case) carries the token."""
    config = {"on_demand": {"token": TOKEN, "header": "X-Profile-Me"}}
    with rig(tmp_path, config) as r:
        _request(r, "/fast", {"x-profile-me": TOKEN})
        _request(r, "/fast", {HEADER: TOKEN})
        assert len(r.profile_ids()) == 1


def test_on_demand_profiles_one_request_at_a_time(tmp_path: Path) -> None:
    """A second on-demand request while one is profiled is skipped and counted."""
    with rig(tmp_path, ON_DEMAND) as r:

        async def main() -> None:
            await asyncio.gather(
                asgi_request(r.app, "GET", "/overlap/a", headers={HEADER: TOKEN}),
                asgi_request(r.app, "GET", "/overlap/b", headers={HEADER: TOKEN}),
            )
            await asgi_request(r.app, "GET", "/fast", headers={HEADER: TOKEN})

        asyncio.run(main())
        targets = sorted(r.meta(i)["target"] for i in r.profile_ids())
        assert targets == ["/fast", "/overlap/a"]
        assert r.count("skipped", "on_demand") == 1
        assert r.count("kept", "on_demand") == 2


def test_endpoint_lists_and_serves_profiles(tmp_path: Path) -> None:
    """With the token, the endpoint lists profiles newest first and serves each file."""
    with rig(
        tmp_path, {**ON_DEMAND, "hooks": [{"route": "/reports/*", "engine": "cprofile"}]}
    ) as r:
        _request(r, "/reports/cpu", query="s=0.01")
        _request(r, "/fast", {HEADER: TOKEN})
        r.profiling.flush(10)
        listing = _request(r, LIST, {HEADER: TOKEN})
        assert listing.status == 200
        assert listing.header("content-type") == "application/json"
        assert listing.header("cache-control") == "no-store"
        profiles = json.loads(listing.body)["profiles"]
        assert [p["hook"] for p in profiles] == ["on_demand", "/reports/*"]
        assert set(profiles[0]["urls"]) == {"html", "speedscope.json", "metadata"}
        assert set(profiles[1]["urls"]) == {"pstats", "metadata"}
        for profile in profiles:
            for kind, url in profile["urls"].items():
                served = _request(r, url, {HEADER: TOKEN})
                assert served.status == 200, url
                assert served.body == (r.directory / url.rsplit("/", 1)[1]).read_bytes()
                if kind == "html":
                    assert served.header("content-security-policy") == "sandbox allow-scripts"
                    assert served.header("content-type") == "text/html; charset=utf-8"
                if kind == "pstats":
                    assert "attachment" in (served.header("content-disposition") or "")
        trailing = _request(r, LIST + "/", {HEADER: TOKEN})
        assert json.loads(trailing.body) == json.loads(listing.body)


@pytest.mark.parametrize(
    "suffix",
    ["/../../../etc/passwd", "/%2e%2e/etc/passwd", "/nope.html", "/.hidden", "/a/b.json"],
)
def test_endpoint_serves_nothing_outside_its_profiles(tmp_path: Path, suffix: str) -> None:
    """Unknown names and path tricks get a 404 from the endpoint, never a file."""
    (tmp_path / "secret.json").write_text("{}")
    with rig(tmp_path, ON_DEMAND) as r:
        response = _request(r, LIST + suffix, {HEADER: TOKEN})
        assert response.status == 404
        assert json.loads(response.body) == {"error": "no such profile"}


def test_endpoint_answers_get_and_head_only(tmp_path: Path) -> None:
    """POST gets 405 with Allow; HEAD gets the headers and no body."""
    with rig(tmp_path, ON_DEMAND) as r:
        posted = _request(r, LIST, {HEADER: TOKEN}, method="POST")
        assert (posted.status, posted.header("allow")) == (405, "GET, HEAD")
        head = _request(r, LIST, {HEADER: TOKEN}, method="HEAD")
        assert head.status == 200
        assert head.body == b""
        assert int(head.header("content-length") or 0) > 0


def test_endpoint_serves_one_request_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request to the endpoint while another is being answered gets 429 and Retry-After."""
    with rig(tmp_path, ON_DEMAND) as r:
        entered, release = threading.Event(), threading.Event()
        store = r.profiling._store
        real = store.profiles

        def slow_profiles() -> list[dict[str, Any]]:
            entered.set()
            release.wait(10)
            return real()

        monkeypatch.setattr(store, "profiles", slow_profiles)

        async def main() -> tuple[ASGIResponse, ASGIResponse, ASGIResponse]:
            first = asyncio.ensure_future(asgi_request(r.app, "GET", LIST, headers={HEADER: TOKEN}))
            await asyncio.to_thread(entered.wait, 10)
            second = await asgi_request(r.app, "GET", LIST, headers={HEADER: TOKEN})
            release.set()
            answered = await first
            third = await asgi_request(r.app, "GET", LIST, headers={HEADER: TOKEN})
            return answered, second, third

        first, second, third = asyncio.run(main())
        assert first.status == 200
        assert (second.status, second.header("retry-after")) == (429, "1")
        assert third.status == 200


def test_endpoint_is_off_by_default(tmp_path: Path) -> None:
    """With on-demand profiling but no endpoint.enabled, the token opens no endpoint."""
    with rig(tmp_path, {"on_demand": {"token": TOKEN}}) as r:
        assert not r.profiling.serves({"type": "http", "path": LIST})
        assert _request(r, LIST, {HEADER: TOKEN}).status == 404


def test_token_is_never_recorded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The token appears in no span, event, metric, log record, profile file or listing."""
    with caplog.at_level(logging.DEBUG), rig(tmp_path, ON_DEMAND) as r:
        _request(r, "/reports/cpu", {HEADER: TOKEN}, query="s=0.02")
        _request(r, "/fast", {HEADER: "a-wrong-token-0123456789"})
        listing = _request(r, LIST, {HEADER: TOKEN})
        r.profiling.flush(10)
        recorded = [repr(span.to_json()) for span in r.telemetry.spans()] + [
            repr(r.telemetry.metrics())
        ]
        recorded += [rec.getMessage() for rec in caplog.records]
        recorded += [p.read_text(errors="replace") for p in r.directory.iterdir()]
        recorded += [listing.body.decode(), repr(r.profiling), repr(r.profiling._on_demand)]
        assert len(r.profile_ids()) == 1
        assert any("wrong token" in rec.getMessage() for rec in caplog.records)
        for text in recorded:
            assert TOKEN not in text
