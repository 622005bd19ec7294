"""``Profiling``: the profiling component, and the hooks the HTTP middleware calls.

Per request, the middleware calls :meth:`Profiling.begin` before running the app and
:meth:`Profiling.end` in its ``finally``, while the server span is still open. When
no hook could select the request, ``begin`` returns None after a ``str.startswith``
on the route globs' literal prefixes (one regex when a prefix matches; a scan of the
headers when on-demand profiling is configured), and ``end`` is not called. What a
kept profile produces:

- an event ``otelperf.profile`` on the span: the profile id, hook, engine, and the
  top frames by own time (see ``_frames``);
- the profile's files under ``output_dir`` (written by a background thread);
- a point on ``otelperf.profile.captured`` {hook, outcome}.

Outcomes: ``kept``; ``too_fast`` (shorter than ``min_duration``); ``skipped`` (the
hook selected the call but it could not be profiled: the engine was busy, another
profiler held the thread or task, an on-demand profile was already running, or the
writer had too many profiles queued); ``unmatched`` (started on a path that looked
like the route glob, discarded because the route template did not match);
``failed`` (the files could not be written).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import Token
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import anyio.to_thread
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from otelperf import _instruments
from otelperf._component import ComponentTelemetry
from otelperf._errors import OtelperfError
from otelperf._instruments import InstrumentSpec
from otelperf.config._schema import ON_DEMAND_HOOK, ProfilingConfig
from otelperf.profiling._endpoint import Endpoint
from otelperf.profiling._engines import (
    Captured,
    Engine,
    EngineBusyError,
    Run,
    require_pyinstrument,
    start,
)
from otelperf.profiling._frames import AppCode
from otelperf.profiling._functions import Patch, Profiled, patch_function
from otelperf.profiling._select import (
    Candidate,
    Hook,
    OnDemand,
    RouteSelector,
    hook_from_config,
    route_path,
)
from otelperf.profiling._store import ProfileStore, RateLimitedLog, SaveJob, new_id

__all__ = ["PROFILE_EVENT", "PROFILE_ID_HEADER", "ProfileSession", "Profiling"]

_log = logging.getLogger("otelperf.profiling")
_failures = RateLimitedLog()  # bugs, not conditions: logged with traceback, never raised

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROFILE_EVENT = "otelperf.profile"
"""Name of the span event a kept profile adds."""

PROFILE_ID_HEADER = b"x-otelperf-profile-id"
"""Response header announcing an on-demand request's profile id (see ``response_start``)."""

HOOK = "otelperf.profile.hook"
OUTCOME = "otelperf.profile.outcome"

_instruments.register(
    InstrumentSpec(
        "otelperf.profile.captured",
        "counter",
        "{profile}",
        "Calls a profiling hook selected, by outcome: `kept`, `too_fast` (below "
        "`min_duration`), `skipped` (could not be profiled: engine busy, another profiler "
        "running, on-demand already running, writer queue full), `unmatched` (the raw path "
        "looked like the route glob, the route template did not match), `failed` (not written).",
        (HOOK, OUTCOME),
        "profiling",
    )
)


class ProfileSession:
    """One request being profiled (or selected but skipped), from ``begin`` to ``end``."""

    __slots__ = ("candidates", "on_demand", "profile_id", "run")

    def __init__(
        self, run: Run | None, candidates: list[Candidate] | None, on_demand: Hook | None
    ) -> None:
        self.run = run
        self.candidates = candidates
        self.on_demand = on_demand
        self.profile_id: str | None = new_id(on_demand.label) if on_demand is not None else None
        """Known from the start for on-demand profiles, which are always kept: the
        middleware may announce it in the response (:data:`PROFILE_ID_HEADER`)."""

    def __repr__(self) -> str:
        engine = self.run.engine if self.run is not None else "skipped"
        return f"<ProfileSession {engine} on_demand={self.on_demand is not None}>"


@dataclass
class _Call:
    """A function call or block being profiled."""

    hook: Hook
    name: str
    full_name: str
    run: Run
    span: Span
    token: Token[Context]
    started: float


class _ProfileTarget:
    """What a profile is of, for its metadata."""

    def __init__(self, kind: str, target: str | None, **extra: Any) -> None:
        self.kind = kind
        self.target = target
        self.extra = extra


class Profiling:
    """Profiling hooks from ``profiling:`` — for requests, functions and on demand.

    Build it from the config when the Perf is built (no I/O: ``profile()`` can decorate
    at import time); :meth:`start` (or :meth:`open`) in the lifespan startup creates
    ``output_dir``, the writer thread and the metric, and applies ``function:`` hooks;
    :meth:`stop` (or :meth:`close`) undoes them and waits for queued profiles.
    """

    name = "profiling"

    def __init__(self, config: ProfilingConfig) -> None:
        self._config = config  # private: it holds the on-demand token
        hooks = [hook_from_config(h) for h in config.hooks]
        self._hooks: dict[str, Hook] = {h.label: h for h in hooks}
        self._routes = RouteSelector(hooks)
        self._on_demand = OnDemand(config.on_demand) if config.on_demand is not None else None
        keep = {h.label: h.keep for h in hooks}
        if config.on_demand is not None:
            keep[ON_DEMAND_HOOK] = config.on_demand.keep
        self._store = ProfileStore(
            config.output_dir, max_total_size=config.max_total_size, keep=keep
        )
        self._endpoint = (
            Endpoint(config.endpoint.path, self._store, self._on_demand)
            if config.endpoint.enabled and self._on_demand is not None
            else None
        )
        self._interval = config.interval
        self._top = config.top_frames
        self._app = AppCode(config.app_packages)
        needs_pyinstrument = self._on_demand is not None or any(
            h.engine == "pyinstrument" for h in hooks
        )
        if needs_pyinstrument:
            require_pyinstrument("profiling with engine pyinstrument")
        self.selects_requests = bool(self._routes.hooks) or self._on_demand is not None
        """Whether any request can be profiled (route hooks or on-demand configured)."""
        self._requests = False  # selects_requests, once started
        self._tracer: Tracer | None = None
        self._counter: Any = None
        self._on_demand_busy = threading.Lock()
        self._patches: list[Patch] = []
        self._started = False
        self._pid = 0

    def __repr__(self) -> str:
        state = "started" if self._started else "stopped"
        return (
            f"<Profiling hooks={list(self._hooks)} on_demand={self._on_demand is not None} "
            f"endpoint={self._endpoint is not None} {state}>"
        )

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` did not since."""
        return self._started

    @property
    def endpoint_enabled(self) -> bool:
        """Whether the profile endpoint is configured (``profiling.endpoint.enabled``)."""
        return self._endpoint is not None

    @property
    def output_dir(self) -> str:
        """Where profiles are written."""
        return str(self._store.directory)

    # --- the Component contract ---------------------------------------------------------

    async def start(self, telemetry: ComponentTelemetry) -> None:
        """Create ``output_dir`` and the writer, apply function hooks; idempotent."""
        self.open(telemetry)

    def open(self, telemetry: ComponentTelemetry) -> None:
        """:meth:`start` for synchronous callers (``Perf.start``)."""
        self._tracer = telemetry.tracer
        self._counter = _instruments.create(telemetry.meter, "otelperf.profile.captured")
        if self._started and self._pid == os.getpid():
            return
        if self._started:
            # Started before a fork: the writer thread did not come along; function
            # hooks did (the module attributes were copied) and stay applied.
            self._store.after_fork()
            self._on_demand_busy = threading.Lock()
            self._store.open()
            self._pid = os.getpid()
            return
        self._store.open()
        try:
            for hook in self._hooks.values():
                if hook.function is not None:
                    self._patches.append(patch_function(Profiled(self, hook), hook.function))
        except OtelperfError:
            self._unpatch()
            self._store.close()
            raise
        self._started = True
        self._pid = os.getpid()
        self._requests = self.selects_requests

    async def stop(self) -> None:
        """Undo function hooks, stop selecting, write every queued profile."""
        self._stop_selecting()
        await anyio.to_thread.run_sync(self._store.close)

    def close(self) -> None:
        """:meth:`stop` for synchronous callers."""
        self._stop_selecting()
        self._store.close()

    def _stop_selecting(self) -> None:
        self._requests = False
        self._started = False
        self._unpatch()

    def _unpatch(self) -> None:
        patches, self._patches = self._patches, []
        for patch in reversed(patches):
            patch.undo()

    def readiness_check(self) -> Callable[[], Awaitable[object]] | None:
        """None: profiling never makes the service unready."""
        return None

    async def ping(self) -> None:
        """Check, creating nothing, that ``output_dir`` exists writable or can be created."""
        await anyio.to_thread.run_sync(self._store.check)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every kept profile is on disk (tests, and before reading the directory)."""
        return self._store.flush(timeout)

    # --- code ---------------------------------------------------------------------------

    def profile(self, hook: str) -> Profiled:
        """A decorator and context manager profiling under the hook named ``hook``.

        The hook is a ``profiling.hooks`` entry with a ``name`` (and no ``route``)::

            profiling:
              hooks:
                - {name: reprice, min_duration: 200ms, engine: cprofile}

            @perf.profile("reprice")
            def reprice_all(): ...
        """
        found = self._hooks.get(hook)
        if found is None:
            named = ", ".join(repr(h) for h in self._hooks if self._hooks[h].route is None)
            raise OtelperfError(
                f"no profiling hook named {hook!r} (hooks usable here: {named or 'none'}); "
                f"add one under profiling.hooks, e.g. - {{name: {hook}}}"
            )
        if found.route is not None:
            raise OtelperfError(
                f"profiling hook {hook!r} selects requests by route; perf.profile needs a hook "
                "with only a name (or a function)"
            )
        return Profiled(self, found)

    def _call_begin(
        self, hook: Hook, name: str, full_name: str, *, follow_awaits: bool
    ) -> _Call | None:
        tracer = self._tracer
        if not self._started or tracer is None or not hook.sampled():
            return None
        run = self._start(hook.engine, follow_awaits, f"a call of {full_name}")
        if run is None:
            self._count(hook.label, "skipped")
            return None
        span = tracer.start_span(
            name, attributes={"code.function.name": full_name, HOOK: hook.label}
        )
        token = context_api.attach(trace.set_span_in_context(span))
        return _Call(hook, name, full_name, run, span, token, time.perf_counter())

    def _call_end(self, call: _Call, error: BaseException | None) -> None:
        duration = time.perf_counter() - call.started
        span = call.span
        try:
            captured = call.run.stop()
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", type(error).__qualname__)
            if duration < call.hook.min_duration:
                self._count(call.hook.label, "too_fast")
            else:
                self._keep(
                    call.hook, captured, span, duration, _ProfileTarget("function", call.full_name)
                )
        except Exception:
            _failures.exception("profiling hook %r failed to finish a profile", call.hook.label)
        finally:
            span.end()
            context_api.detach(call.token)

    # --- requests -----------------------------------------------------------------------

    def begin(self, scope: Scope) -> ProfileSession | None:
        """Start profiling the request of ``scope`` if a hook selects it; None otherwise.

        Call it inside the request's task, with the server span current, right before
        the app runs; pass what it returns to :meth:`end`.
        """
        if not self._requests:
            return None
        on_demand = self._on_demand
        if on_demand is not None:
            verdict = on_demand.check(scope["headers"])
            if verdict:
                return self._begin_on_demand(on_demand.hook)
            if verdict is False:
                _log.debug("on-demand profiling refused a request: wrong token")
        if not self._routes.hooks:
            return None
        candidates = self._routes.candidates(route_path(scope))
        if candidates is None:
            return None
        engine = next(c.hook.engine for c in candidates if c.sampled)
        # A session even when the engine is busy: whether to count the request as
        # skipped depends on its route, known only at the end.
        return ProfileSession(self._start(engine, True, "a request"), candidates, None)

    def _begin_on_demand(self, hook: Hook) -> ProfileSession | None:
        if not self._on_demand_busy.acquire(blocking=False):
            self._count(hook.label, "skipped")
            return None
        run = self._start("pyinstrument", True, "an on-demand request")
        if run is None:
            self._on_demand_busy.release()
            self._count(hook.label, "skipped")
            return None
        return ProfileSession(run, None, hook)

    def _start(self, engine: Engine, follow_awaits: bool, what: str) -> Run | None:
        """The engine started, or None (logged) if it cannot run now: never raises."""
        try:
            return start(engine, interval=self._interval, follow_awaits=follow_awaits)
        except EngineBusyError as exc:
            _log.debug("profiling skipped %s: %s", what, exc)
        except Exception:
            _failures.exception("profiling could not start %s %s", engine, what)
        return None

    def end(
        self,
        session: ProfileSession,
        *,
        span: Span,
        route: str | None,
        duration: float,
        status: int,
        method: str | None = None,
    ) -> None:
        """Finish ``session``: stop the engine, decide, add the span event, queue the files.

        Call it in the middleware's ``finally`` before the span ends, with the route
        template (None when unknown), the request's duration in seconds and its status
        (0 if none was sent). Never raises.
        """
        captured: Captured | None = None
        try:
            if session.run is not None:
                captured = session.run.stop()
        except Exception:
            _failures.exception("profiling could not stop a request's profiler")
        finally:
            if session.on_demand is not None:
                self._on_demand_busy.release()
        try:
            self._finish_request(session, captured, span, route, duration, status, method)
        except Exception:
            _failures.exception("profiling failed to finish a request's profile")

    def _finish_request(
        self,
        session: ProfileSession,
        captured: Captured | None,
        span: Span,
        route: str | None,
        duration: float,
        status: int,
        method: str | None,
    ) -> None:
        hook = session.on_demand
        if hook is None:
            candidates = session.candidates or []
            decided = RouteSelector.decide(candidates, route)
            if decided is None:
                if captured is not None:
                    first = next(c.hook for c in candidates if c.sampled)
                    self._count(first.label, "unmatched")
                return
            if not decided.sampled:
                return
            hook = decided.hook
        if captured is None:
            self._count(hook.label, "skipped")
            return
        if duration < hook.min_duration:
            self._count(hook.label, "too_fast")
            return
        target = _ProfileTarget("request", route, status=status or None, method=method)
        self._keep(hook, captured, span, duration, target, session.profile_id)

    # --- the endpoint -------------------------------------------------------------------

    def serves(self, scope: Scope) -> bool:
        """Whether the request is for the profile endpoint (enabled and started): cheap."""
        endpoint = self._endpoint
        return endpoint is not None and self._started and endpoint.owns(route_path(scope))

    async def handle_endpoint(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a request to the endpoint; False (nothing sent) without the right token.

        When it returns False, pass the request on to the application as usual: to a
        caller without the token the endpoint does not exist.
        """
        if not self.serves(scope):
            return False
        endpoint = self._endpoint
        return endpoint is not None and await endpoint.handle(scope, receive, send)

    @staticmethod
    def response_start(session: ProfileSession | None, message: Message) -> Message:
        """``message`` (an ``http.response.start``) announcing the session's profile id.

        Only on-demand sessions have an id known this early; for every other request
        the message is returned as it is, not copied.
        """
        if session is None or session.profile_id is None:
            return message
        headers = [*message.get("headers", ()), (PROFILE_ID_HEADER, session.profile_id.encode())]
        return {**message, "headers": headers}

    # --- keeping ------------------------------------------------------------------------

    def _count(self, hook: str, outcome: str) -> None:
        counter = self._counter
        if counter is not None:
            counter.add(1, {HOOK: hook, OUTCOME: outcome})

    def _keep(
        self,
        hook: Hook,
        captured: Captured,
        span: Span,
        duration: float,
        target: _ProfileTarget,
        profile_id: str | None = None,
    ) -> None:
        profile_id = profile_id or new_id(hook.label)
        top = captured.top(self._top, self._app)
        context = span.get_span_context()
        meta: dict[str, Any] = {
            "id": profile_id,
            "hook": hook.label,
            "engine": captured.engine,
            "kind": target.kind,
            "target": target.target,
            "duration": round(duration, 6),
            "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "trace_id": f"{context.trace_id:032x}" if context.is_valid else None,
            "span_id": f"{context.span_id:016x}" if context.is_valid else None,
            **{k: v for k, v in target.extra.items() if v is not None},
            "top_frames": [
                {
                    "function": f.function,
                    "location": f.location,
                    "self_time": round(f.self_time, 6),
                    "await_time": round(f.await_time, 6),
                }
                for f in top
            ],
        }
        describe = f"{hook.label}: {target.target or target.kind}"
        job = SaveJob(profile_id, hook.label, describe, meta, captured)
        label = hook.label

        def written(ok: bool) -> None:
            self._count(label, "kept" if ok else "failed")

        if not self._store.submit(job, written):
            self._count(label, "skipped")
            return
        if span.is_recording():
            attributes: dict[str, Any] = {
                "otelperf.profile.id": profile_id,
                HOOK: hook.label,
                "otelperf.profile.engine": captured.engine,
                "otelperf.profile.top_frames": [f.describe() for f in top],
                "otelperf.profile.top_frames.self_time": [round(f.self_time, 6) for f in top],
            }
            if captured.engine == "pyinstrument":
                attributes["otelperf.profile.top_frames.await_time"] = [
                    round(f.await_time, 6) for f in top
                ]
            span.add_event(PROFILE_EVENT, attributes)
