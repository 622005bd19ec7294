"""Which requests and calls a hook selects: route globs, sampling, the on-demand token.

The middleware learns a request's route template only after the app ran, but a
profile has to start before. So a route glob is used twice:

1. **Before** the app runs, on the raw path (less the server's ``root_path``, as
   Starlette routes it), as a cheap *could-match* test: the glob with every
   ``{param}`` turned into ``*`` (``/items/{item_id}`` -> ``/items/*``). A path served
   by a template the glob matches passes it, so nothing is missed (as long as the
   glob's own ``?`` and ``[...]`` stay outside ``{param}`` names). Only then is the
   hook's ``sample_rate`` drawn. A request no glob could match costs one
   ``str.startswith`` on the globs' literal prefixes (and one regex when a prefix
   matches); no profiler ever starts for it.
2. **After**, on the route template, with the glob itself; the first hook whose glob
   matches decides. A profile started on a path that looked right but whose template
   did not match (``/items/special`` served by its own route) is discarded and
   counted as ``unmatched``.

Globs follow ``fnmatch`` (case-sensitive; ``*`` matches ``/`` too).
"""

from __future__ import annotations

import fnmatch
import hmac
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otelperf.config._schema import ON_DEMAND_HOOK, OnDemandProfiling, ProfilingHook
from otelperf.profiling._engines import Engine

__all__ = [
    "Candidate",
    "Hook",
    "OnDemand",
    "RouteSelector",
    "hook_from_config",
    "on_demand_hook",
    "route_path",
]

_PARAM = re.compile(r"\{[^}]*\}")


def _literal_prefix(glob: str) -> str:
    """The start of ``glob`` up to its first wildcard or ``{param}``."""
    for index, char in enumerate(glob):
        if char in "*?[{":
            return glob[:index]
    return glob


@dataclass(frozen=True)
class Hook:
    """A configured hook, as plain values (no validation library on the request path)."""

    label: str
    engine: Engine
    sample_rate: float
    min_duration: float
    keep: int
    route: str | None = None
    function: str | None = None
    template: re.Pattern[str] | None = None
    """Matches the route templates the glob selects."""
    prefilter: re.Pattern[str] | None = None
    """Matches every raw path that could be served by such a template."""

    def sampled(self) -> bool:
        """Draw this hook's sample_rate once."""
        rate = self.sample_rate
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)


def hook_from_config(config: ProfilingHook) -> Hook:
    """The runtime form of one ``profiling.hooks`` entry."""
    template = prefilter = None
    if config.route is not None:
        template = re.compile(fnmatch.translate(config.route))
        prefilter = re.compile(fnmatch.translate(_PARAM.sub("*", config.route)))
    return Hook(
        label=config.label,
        engine=config.engine,
        sample_rate=config.sample_rate,
        min_duration=config.min_duration,
        keep=config.keep,
        route=config.route,
        function=config.function,
        template=template,
        prefilter=prefilter,
    )


def on_demand_hook(config: OnDemandProfiling) -> Hook:
    """The pseudo-hook on-demand profiles are kept under: pyinstrument, always kept."""
    return Hook(ON_DEMAND_HOOK, "pyinstrument", 1.0, 0.0, config.keep)


@dataclass(frozen=True)
class Candidate:
    """A route hook whose glob could match the request, and whether it sampled it in."""

    hook: Hook
    sampled: bool


def route_path(scope: Mapping[str, Any]) -> str:
    """The path the app's router matches: ``path`` less the server's ``root_path``."""
    path: str = scope["path"]
    root = scope.get("root_path")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


class RouteSelector:
    """The route hooks, in order, with their two matching steps."""

    def __init__(self, hooks: Iterable[Hook]) -> None:
        self.hooks: tuple[Hook, ...] = tuple(h for h in hooks if h.prefilter is not None)
        # Most paths are rejected by the globs' literal prefixes (one str.startswith),
        # the rest by one alternation of every glob, before any hook is looked at.
        self._prefixes = tuple(_literal_prefix(h.route or "") for h in self.hooks)
        self._any = re.compile(
            "|".join(f"(?:{h.prefilter.pattern})" for h in self.hooks if h.prefilter is not None)
        )

    def candidates(self, path: str) -> list[Candidate] | None:
        """The hooks that could select ``path``, or None when none could or none sampled it."""
        if not path.startswith(self._prefixes) or self._any.match(path) is None:
            return None
        found: list[Candidate] | None = None
        any_sampled = False
        for hook in self.hooks:
            if hook.prefilter is not None and hook.prefilter.match(path) is not None:
                sampled = hook.sampled()
                any_sampled = any_sampled or sampled
                if found is None:
                    found = []
                found.append(Candidate(hook, sampled))
        return found if any_sampled else None

    @staticmethod
    def decide(candidates: Sequence[Candidate], route: str | None) -> Candidate | None:
        """The first candidate whose glob matches the route template, if any."""
        if route is None:
            return None
        for candidate in candidates:
            template = candidate.hook.template
            if template is not None and template.match(route) is not None:
                return candidate
        return None


class OnDemand:
    """Recognizes the on-demand header and checks its token in constant time."""

    def __init__(self, config: OnDemandProfiling) -> None:
        self.header = config.header.lower().encode("latin-1")
        self._token = config.token.encode("utf-8")
        self.hook = on_demand_hook(config)

    def __repr__(self) -> str:  # never the token
        return f"<OnDemand header={self.header.decode('latin-1')!r}>"

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> bool | None:
        """None: no header; True: the right token; False: a wrong one."""
        wanted = self.header
        for name, value in headers:
            if name == wanted:
                return hmac.compare_digest(bytes(value).strip(), self._token)
        return None
