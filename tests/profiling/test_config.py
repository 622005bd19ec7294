"""The ``profiling:`` section: what it accepts, and the message for what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from otelperf import ConfigError
from otelperf.config import load_config
from otelperf.config._schema import ProfilingConfig

TOKEN = "0123456789abcdef-token"


def _load(profiling: dict[str, Any]) -> ProfilingConfig:
    config = load_config({"version": 1, "service": {"name": "x"}, "profiling": profiling})
    return config.profiling


@pytest.mark.parametrize(
    ("profiling", "path", "message"),
    [
        ({"hooks": [{}]}, "profiling.hooks[0]", "needs a route, a function, or a name"),
        (
            {"hooks": [{"route": "/a", "function": "m:f"}]},
            "profiling.hooks[0]",
            "needs exactly one of route or function",
        ),
        ({"hooks": [{"route": "reports/*"}]}, "profiling.hooks[0].route", "starting with '/'"),
        ({"hooks": [{"function": "m.f"}]}, "profiling.hooks[0].function", "module:qualname"),
        ({"hooks": [{"name": "a b"}]}, "profiling.hooks[0].name", "invalid hook name"),
        ({"hooks": [{"name": "on_demand"}]}, "profiling.hooks[0].name", "reserved"),
        ({"hooks": [{"route": "/a"}, {"route": "/a"}]}, "profiling", "two profiling hooks"),
        ({"hooks": [{"name": "x"}, {"name": "x", "route": "/b"}]}, "profiling", "named 'x'"),
        ({"hooks": [{"name": "x", "keep": 0}]}, "profiling.hooks[0].keep", "greater than"),
        ({"interval": 0}, "profiling.interval", "greater than 0"),
        ({"app_packages": ["shop-api"]}, "profiling.app_packages", "invalid package name"),
        ({"top_frames": 0}, "profiling.top_frames", "greater than"),
        ({"on_demand": {"token": TOKEN, "header": "a b"}}, "profiling.on_demand.header", "header"),
        ({"endpoint": {"path": "profiles"}}, "profiling.endpoint.path", "absolute path"),
        # From a mapping there are no positions: the section is named (a file names the key).
        ({"endpoint": {"enabled": True}}, "profiling", "needs on_demand.token"),
    ],
)
def test_invalid_profiling_config_is_refused_where_it_is_wrong(
    profiling: dict[str, Any], path: str, message: str
) -> None:
    """Each mistake is one problem naming its key path and what would be valid."""
    with pytest.raises(ConfigError) as caught:
        _load(profiling)
    (problem,) = caught.value.problems
    assert problem.path == path
    assert message in problem.message


def test_profiling_defaults_and_labels() -> None:
    """Defaults are usable as they are; a hook's label is its name, route or function."""
    config = _load(
        {
            "hooks": [{"route": "/r/*"}, {"function": "m:f"}, {"name": "n", "route": "/x"}],
            "on_demand": {"token": TOKEN, "header": "X-Profile"},
        }
    )
    assert [h.label for h in config.hooks] == ["/r/*", "m:f", "n"]
    assert config.interval == 0.001
    assert config.top_frames == 5
    assert config.max_total_size == 100 * 1024 * 1024
    assert config.endpoint.enabled is False
    assert config.on_demand is not None
    assert config.on_demand.header == "x-profile"
    assert config.hooks[0].engine == "pyinstrument"
    assert config.hooks[0].sample_rate == 1.0
