"""The ASGI middleware: one server span and the stable HTTP metrics per request, cheaply.

Plain ASGI (never ``BaseHTTPMiddleware``, which runs the app in another task and
loses contextvars, where the OpenTelemetry context lives). All per-request state
lives in local variables of :meth:`OtelperfMiddleware._http`, so nothing can leak
from one request into the next.

Cost matters here: the SDK spends ~10-15 µs per histogram point, so the middleware
records one span, one duration point and the body-size points, and keeps counts
(active requests, SLO verdicts) in plain integers reported by observable
instruments at collection time.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.trace import SpanKind, Status, StatusCode

from otelperf import _instruments
from otelperf._redact import SENSITIVE_HEADERS
from otelperf.http._errors import ERROR_TYPE_KEY, response_for
from otelperf.http._routes import RouteTable, find_routes_owner

if TYPE_CHECKING:
    from otelperf._perf import Perf
    from otelperf.config._schema import HttpConfig

__all__ = ["ASGIApp", "OtelperfMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("otelperf.http")

_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
_REDACTED = "[REDACTED]"
_SIGNATURE_PARAMS = frozenset(
    {
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "awsaccesskeyid",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "password",
        "secret",
        "client_secret",
        "client_assertion",
        "code",
        "jwt",
        "auth",
        "session",
        "sessionid",
    }
)
_SECRET_SUFFIXES = ("_token", "-token", "_secret", "_key", "password", "_signature")
_PROTOCOLS = {"1.0": "1.0", "1.1": "1.1", "2": "2", "2.0": "2", "3": "3"}


def _secret_param(name: str) -> bool:
    name = name.lower()
    return name in _SIGNATURE_PARAMS or name.endswith(_SECRET_SUFFIXES)


def redact_query(query: str) -> str:
    """A query string with the values of signature and credential parameters redacted."""
    if not query:
        return query
    pairs = parse_qsl(query.replace(";", "&"), keep_blank_values=True)
    if not any(_secret_param(k) for k, _ in pairs):
        return query
    return urlencode([(k, _REDACTED if _secret_param(k) else v) for k, v in pairs], safe="[]")


class _Exclusions:
    """Exact paths and start-anchored globs, checked with one set lookup and one regex."""

    def __init__(self, patterns: Iterable[str]) -> None:
        exact, globs = set(), []
        for pattern in patterns:
            if any(ch in pattern for ch in "*?["):
                globs.append(fnmatch.translate(pattern))
            else:
                exact.add(pattern)
        self.exact = frozenset(exact)
        self.regex = re.compile("|".join(globs)) if globs else None

    def __call__(self, path: str) -> bool:
        if path in self.exact:
            return True
        return self.regex is not None and self.regex.match(path) is not None


class _Bound:
    """Instruments and counters of one telemetry generation (rebuilt if Perf restarts)."""

    def __init__(self, perf: Perf, owner: OtelperfMiddleware) -> None:
        telemetry = self.telemetry = perf._require()
        meter = perf.meter
        self.tracer = perf.tracer
        self.duration = telemetry.histogram(meter, "http.server.request.duration")
        self.request_size = telemetry.histogram(meter, "http.server.request.body.size")
        self.response_size = telemetry.histogram(meter, "http.server.response.body.size")
        self.ws_duration = telemetry.histogram(meter, "otelperf.http.websocket.duration")
        self.active: dict[tuple[str, str], int] = {}
        self.slo: dict[tuple[str, str, str | None], int] = {}
        # Callbacks go through the middleware: on a provider the application owns, a
        # second lifespan gets the first instrument back (with its first callback).
        _instruments.create(meter, "http.server.active_requests", [owner._observe_active])
        if owner._judging:
            _instruments.create(meter, "otelperf.http.slo.requests", [owner._observe_slo])
        if owner.compression_saved is not None:
            _instruments.create(meter, "otelperf.http.compression.saved", [owner._observe_saved])


class OtelperfMiddleware:
    """ASGI middleware reporting every HTTP request as a server span and semconv metrics.

    Use it through ``perf.wrap(app)`` (which also runs otelperf's lifespan), or as a
    Starlette/FastAPI middleware entry::

        app = Starlette(routes=..., middleware=[Middleware(OtelperfMiddleware, perf=perf)],
                        lifespan=perf.lifespan())
    """

    def __init__(self, app: ASGIApp, *, perf: Perf, manage_lifespan: bool = False) -> None:
        self.app = app
        self.perf = perf
        self.manage_lifespan = manage_lifespan
        config: HttpConfig = perf.config.http
        health = perf.config.health
        self._health_paths = {p for p in (health.liveness, health.readiness) if p}
        self._excluded = _Exclusions([*config.exclude, *self._health_paths])
        self._capture_request = tuple(h.lower() for h in config.capture_headers.request)
        self._capture_response = tuple(h.lower() for h in config.capture_headers.response)
        slo = config.slo
        self._latency_threshold = (
            slo.latency.threshold if slo is not None and slo.latency is not None else None
        )
        self._availability = slo is not None and slo.availability is not None
        self._judging = self._latency_threshold is not None or self._availability
        self._routes = RouteTable(find_routes_owner(app))
        self._bound: _Bound | None = None
        self._bind_failed = False
        profiling = perf.resources.profiling
        self._profiling = (
            profiling if profiling is not None and profiling.selects_requests else None
        )
        self._profile_endpoint = (
            profiling if profiling is not None and profiling.endpoint_enabled else None
        )
        self._propagator_fields: frozenset[bytes] = frozenset()
        if config.compression is not None and config.compression.enabled:
            from otelperf.http._compression import CompressionMiddleware

            self.compression_saved: dict[str, int] | None = {}
            self._inner: ASGIApp = CompressionMiddleware(
                app, config=config.compression, on_saved=self._saved
            )
        else:
            self.compression_saved = None
            self._inner = app

    def _saved(self, saved: int, encoding: str) -> None:
        totals = self.compression_saved
        if totals is not None and saved > 0:  # a stream of tiny chunks can grow; count savings
            totals[encoding] = totals.get(encoding, 0) + saved

    def _bind(self) -> _Bound | None:
        perf = self.perf
        if not perf.started:
            if perf.shut_down:
                return None  # a late request after shutdown: serve it, report nothing
            # Used as a bare middleware entry without otelperf's lifespan: start on first use.
            try:
                perf.start()
            except Exception as exc:  # telemetry must never fail a request
                if not self._bind_failed:
                    self._bind_failed = True
                    _log.error("otelperf could not start telemetry: %s", exc)
                return None
        bound = _Bound(perf, self)
        fields = propagate.get_global_textmap().fields
        self._propagator_fields = frozenset(f.lower().encode("latin-1") for f in fields)
        self._bound = bound
        return bound

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path in self._health_paths:
                await self.perf.health.handle(scope, receive, send)
                return
            endpoint = self._profile_endpoint
            if (
                endpoint is not None
                and endpoint.serves(scope)
                and await endpoint.handle_endpoint(scope, receive, send)
            ):
                return
            if self._excluded(path):
                await self._inner(scope, receive, send)
                return
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan" and self.manage_lifespan:
            from otelperf._lifespan import run_lifespan

            await run_lifespan(self.perf, self.app, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _observe_active(self, options: CallbackOptions) -> Iterable[Observation]:
        active = self._bound.active if self._bound is not None else {}
        return [
            Observation(count, {HTTP_REQUEST_METHOD: method, URL_SCHEME: scheme})
            for (method, scheme), count in list(active.items())
        ]

    def _observe_slo(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        counts = self._bound.slo if self._bound is not None else {}
        for (slo, result, route), count in list(counts.items()):
            attrs = {"otelperf.slo": slo, "otelperf.slo.result": result}
            if route is not None:
                attrs[HTTP_ROUTE] = route
            out.append(Observation(count, attrs))
        return out

    def _observe_saved(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"http.response.header.content-encoding": encoding})
            for encoding, count in list((self.compression_saved or {}).items())
        ]

    def _route(self, scope: Scope) -> str | None:
        route = scope.get("route")
        return None if route is None else self._routes.template(route, scope.get("app"))

    def _current(self) -> _Bound | None:
        bound = self._bound
        if bound is None or bound.telemetry is not self.perf._telemetry:
            bound = self._bind()
        return bound

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        bound = self._current()
        if bound is None:
            await self._inner(scope, receive, send)
            return
        start = time.perf_counter()
        start_ns = time.time_ns()
        method = scope["method"]
        if method not in _KNOWN_METHODS:
            method = "_OTHER"
        scheme = scope.get("scheme", "http")
        protocol = _PROTOCOLS.get(scope.get("http_version", "1.1"), "1.1")

        carrier: dict[str, str] | None = None
        request_size: int | None = None
        fields = self._propagator_fields
        captured: list[tuple[bytes, bytes]] | None = [] if self._capture_request else None
        for name, value in scope["headers"]:
            if name in fields:
                if carrier is None:
                    carrier = {}
                carrier[name.decode("latin-1")] = value.decode("latin-1")
            elif name == b"content-length":
                try:
                    request_size = int(value)
                except ValueError:
                    request_size = None
            if captured is not None:
                captured.append((name, value))
        parent = propagate.extract(carrier) if carrier is not None else None

        span_attrs: dict[str, Any] = {
            HTTP_REQUEST_METHOD: method,
            URL_SCHEME: scheme,
            URL_PATH: scope["path"],
            NETWORK_PROTOCOL_VERSION: protocol,
        }
        if method == "_OTHER":
            span_attrs[HTTP_REQUEST_METHOD_ORIGINAL] = scope["method"]
        query = scope.get("query_string", b"")
        if query:
            span_attrs[URL_QUERY] = redact_query(query.decode("latin-1"))
        client = scope.get("client")
        if client:
            span_attrs[CLIENT_ADDRESS] = client[0]
        if captured:
            _capture(span_attrs, "http.request.header.", captured, self._capture_request)

        span_name = method if method != "_OTHER" else "HTTP"
        span = bound.tracer.start_span(
            span_name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=span_attrs,
            start_time=start_ns,
        )
        token = context_api.attach(trace.set_span_in_context(span, parent))
        active_key = (method, scheme)
        active = bound.active
        active[active_key] = active.get(active_key, 0) + 1
        profiling = self._profiling
        session = profiling.begin(scope) if profiling is not None else None

        status = 0
        response_size = 0
        ended: float | None = None
        capture_response = self._capture_response

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_size, ended
            kind = message["type"]
            if kind == "http.response.body":
                response_size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    await send(message)
                    ended = time.perf_counter()
                    return
            elif kind == "http.response.start":
                status = message["status"]
                if session is not None and profiling is not None:
                    message = profiling.response_start(session, message)
                if capture_response:
                    headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
                    attrs: dict[str, Any] = {}
                    _capture(attrs, "http.response.header.", headers, capture_response)
                    if attrs:
                        span.set_attributes(attrs)
            await send(message)

        error_type: str | None = None
        try:
            await self._inner(scope, receive, send_wrapper)
        except BaseException as exc:
            error_type = type(exc).__qualname__
            span.record_exception(exc)
            answer = response_for(exc) if status == 0 else None
            if answer is None:
                if status == 0:
                    status = 500
                raise
            await answer(scope, receive, send_wrapper)  # e.g. 503 for an exhausted pool
        finally:
            if ended is None:
                ended = time.perf_counter()
            duration = ended - start
            active[active_key] -= 1
            route = self._route(scope)
            if route is None and status and status != 404:
                route = self._routes.match(scope)
            attrs: dict[str, Any] = {
                HTTP_REQUEST_METHOD: method,
                URL_SCHEME: scheme,
                NETWORK_PROTOCOL_VERSION: protocol,
            }
            if status:
                attrs[HTTP_RESPONSE_STATUS_CODE] = status
            if route is not None:
                attrs[HTTP_ROUTE] = route
                span.update_name(f"{span_name} {route}")
            if error_type is None and status >= 500:
                error_type = scope.get(ERROR_TYPE_KEY) or str(status)
            if error_type is not None:
                attrs[ERROR_TYPE] = error_type
            if span.is_recording():
                if status:
                    span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
                if route is not None:
                    span.set_attribute(HTTP_ROUTE, route)
                if error_type is not None:
                    span.set_attribute(ERROR_TYPE, error_type)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            # Recorded while the span is current, so exemplars point at this trace.
            key = (method, scheme, protocol, status, route, error_type)
            span_context = span.get_span_context()
            bound.duration.record(duration, key, attrs, span_context)
            bound.response_size.record(response_size, key, attrs, span_context)
            if request_size is not None:
                bound.request_size.record(request_size, key, attrs, span_context)
            if self._judging:
                self._judge(bound, route, status, duration)
            if session is not None and profiling is not None:
                profiling.end(
                    session, span=span, route=route, duration=duration, status=status, method=method
                )
            span.end(start_ns + int(duration * 1e9))
            context_api.detach(token)

    def _judge(self, bound: _Bound, route: str | None, status: int, duration: float) -> None:
        slo = bound.slo
        verdicts: list[tuple[str, str]] = []
        if self._availability:
            verdicts.append(("availability", "bad" if status >= 500 else "good"))
        threshold = self._latency_threshold
        if threshold is not None and status < 500:
            # Failed requests count against availability only, as in the SRE workbook.
            verdicts.append(("latency", "good" if duration <= threshold else "bad"))
        for name, result in verdicts:
            key: tuple[str, str, str | None] = (name, result, None)
            slo[key] = slo.get(key, 0) + 1
            if route is not None:
                key = (name, result, route)
                slo[key] = slo.get(key, 0) + 1

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        bound = self._current()
        if bound is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            attrs: dict[str, Any] = {URL_SCHEME: scope.get("scheme", "ws")}
            route = self._route(scope)
            if route is not None:
                attrs[HTTP_ROUTE] = route
            key = (attrs[URL_SCHEME], route)
            bound.ws_duration.record(time.perf_counter() - start, key, attrs)


def _capture(
    attrs: dict[str, Any],
    prefix: str,
    headers: Iterable[tuple[bytes, bytes]],
    allowed: tuple[str, ...],
) -> None:
    values: dict[str, list[str]] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name in allowed:
            value = _REDACTED if name in SENSITIVE_HEADERS else raw_value.decode("latin-1")
            values.setdefault(name, []).append(value)
    for name, items in values.items():
        attrs[prefix + name] = items
