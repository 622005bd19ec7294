"""``Perf``: one loaded config and the telemetry and resources built from it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor

from otelperf import _instruments
from otelperf._component import ComponentTelemetry
from otelperf._errors import OtelperfError
from otelperf._health import Check, Health
from otelperf._resources import Resources, lookup
from otelperf._timed import Timed
from otelperf._version import __version__
from otelperf.config import Config, ConfigSource, load_config
from otelperf.telemetry import Telemetry, build_telemetry

if TYPE_CHECKING:
    from otelperf.batch import Batcher
    from otelperf.cache import Cache
    from otelperf.pool import Pool

__all__ = ["Perf", "load"]

_SCOPE = "otelperf"


class Perf:
    """A service's performance plumbing, built from one config.

    Creating a ``Perf`` validates nothing more and opens nothing: telemetry is
    built by :meth:`start` (or ``async with perf``), so that each worker process
    of a pre-forking server builds its own providers after the fork.

    >>> perf = load({"version": 1, "service": {"name": "demo"},
    ...              "telemetry": {"exporter": "none", "set_global": False}})
    >>> with perf:
    ...     perf.tracer.start_span("work").end()
    """

    def __init__(
        self,
        config: Config,
        *,
        source: str | None = None,
        tracer_provider: trace_api.TracerProvider | None = None,
        meter_provider: metrics_api.MeterProvider | None = None,
        metric_readers: Sequence[MetricReader] = (),
        span_processors: Sequence[SpanProcessor] = (),
    ) -> None:
        self.config = config
        self.source = source
        self._app_tracer_provider = tracer_provider
        self._app_meter_provider = meter_provider
        self._metric_readers = tuple(metric_readers)
        self._span_processors = tuple(span_processors)
        self._telemetry: Telemetry | None = None
        self._tracer: trace_api.Tracer | None = None
        self._meter: metrics_api.Meter | None = None
        self._pid: int | None = None
        self.shut_down = False
        """True once shutdown began; the middleware then stops reporting (no silent restart)."""
        self._histograms: dict[str, Any] = {}
        self._runtime: Any = None
        self.health = Health(config.health)
        """Readiness checks; resources register theirs, and so can the application."""
        self.resources = Resources(config)
        """The declared pools, caches, batchers and profiling hooks (opened by astart)."""

    def __repr__(self) -> str:
        state = "started" if self._telemetry is not None else "not started"
        return f"<Perf service={self.config.service.name!r} {state}>"

    # --- lifecycle -----------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether telemetry is built (and not shut down)."""
        return self._telemetry is not None

    def start(self) -> None:
        """Build telemetry. Idempotent; in a forked child it builds afresh."""
        if self._telemetry is not None and self._pid == os.getpid():
            return
        self.shut_down = False
        self._telemetry = build_telemetry(
            self.config,
            tracer_provider=self._app_tracer_provider,
            meter_provider=self._app_meter_provider,
            metric_readers=self._metric_readers,
            span_processors=self._span_processors,
            config_path=self.source,
        )
        self._pid = os.getpid()
        self._tracer = self._telemetry.tracer_provider.get_tracer(_SCOPE, __version__)
        self._meter = self._telemetry.meter_provider.get_meter(_SCOPE, __version__)
        if self._telemetry.fast is not None:
            # Components' histograms (pool wait/use times, cache latencies, ...) take the
            # plain-Python aggregation too; they keep calling the API's record().
            _instruments.bind_fast(self._meter, self._telemetry.api_histogram)

    async def astart(self) -> None:
        """Build telemetry, then open every declared resource (runtime metrics, ...).

        If anything fails to open, what was opened is closed again before the error
        propagates, so a failed startup leaves nothing running.
        """
        self.start()
        try:
            runtime = self.config.runtime
            wanted = runtime.process or runtime.event_loop_lag or bool(runtime.disk_paths)
            if self._runtime is None and wanted:
                from otelperf.runtime import RuntimeMetrics

                self._runtime = RuntimeMetrics(runtime, self.meter_provider)
                await self._runtime.start()
            await self.resources.start(ComponentTelemetry(self.tracer, self.meter), self.health)
        except BaseException:
            await self.ashutdown()
            raise

    def shutdown(self) -> bool:
        """Flush and close telemetry within ``telemetry.shutdown_timeout``; True if all finished.

        Resources opened by :meth:`astart` (pools, caches, batchers) live in an event
        loop: close them with ``await perf.ashutdown()``, which this refuses to skip.
        """
        if self.resources._started:
            raise OtelperfError(
                "resources were started by astart() in an event loop; shut down with "
                "'await perf.ashutdown()' so batchers flush and pools close"
            )
        self.shut_down = True
        self.health.ready = False
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()
        telemetry, self._telemetry = self._telemetry, None
        self._histograms.clear()
        return telemetry.shutdown() if telemetry is not None else True

    async def ashutdown(self) -> bool:
        """Close resources, then flush telemetry, without blocking the event loop while it waits."""
        self.shut_down = True
        self.health.ready = False
        await self.resources.stop(self.health)
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            await runtime.stop()
        telemetry, self._telemetry = self._telemetry, None
        self._histograms.clear()
        return await telemetry.ashutdown() if telemetry is not None else True

    def __enter__(self) -> Perf:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> Perf:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ashutdown()

    # --- telemetry -------------------------------------------------------------

    def _require(self) -> Telemetry:
        if self._telemetry is None:
            raise OtelperfError(
                "Perf is not started; call perf.start() or use 'with perf:' / 'async with perf:' "
                "(perf.wrap(app) starts it in the app's lifespan)"
            )
        return self._telemetry

    @property
    def tracer_provider(self) -> trace_api.TracerProvider:
        """The tracer provider otelperf reports through."""
        return self._require().tracer_provider

    @property
    def meter_provider(self) -> metrics_api.MeterProvider:
        """The meter provider otelperf reports through."""
        return self._require().meter_provider

    @property
    def tracer(self) -> trace_api.Tracer:
        """A tracer on the configured provider, for custom spans."""
        self._require()
        assert self._tracer is not None  # set together with _telemetry
        return self._tracer

    @property
    def meter(self) -> metrics_api.Meter:
        """A meter on the configured provider, for custom instruments."""
        self._require()
        assert self._meter is not None  # set together with _telemetry
        return self._meter

    def timed(self, name: str, attributes: Mapping[str, Any] | None = None) -> Timed:
        """Time a block or function: a span and a histogram point (seconds) named ``name``.

        >>> perf = load({"version": 1, "service": {"name": "demo"},
        ...              "telemetry": {"exporter": "none", "set_global": False}})
        >>> with perf, perf.timed("report.render"):
        ...     pass
        """
        return Timed(self, name, attributes)

    def _timed_histogram(self, name: str) -> Any:
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = self.meter.create_histogram(
                name, unit="s", description=f"Duration of {name}, from perf.timed."
            )
            self._histograms[name] = histogram
        return histogram

    # --- ASGI ------------------------------------------------------------------

    def wrap(self, app: Any) -> Any:
        """``app`` wrapped in otelperf's middleware, with otelperf's lifespan around the app's.

        Startup opens every declared resource before the app's own startup runs;
        shutdown runs the app's shutdown, then closes otelperf's resources, then
        flushes telemetry.
        """
        from otelperf.http import OtelperfMiddleware

        add_handler = getattr(app, "add_exception_handler", None)
        handlers = getattr(app, "exception_handlers", None)
        if self.resources.pools and callable(add_handler) and isinstance(handlers, dict):
            for kind, handler in self.exception_handlers().items():
                if kind not in handlers:  # the application's own handler wins
                    add_handler(kind, handler)
        return OtelperfMiddleware(app, perf=self, manage_lifespan=True)

    def exception_handlers(self) -> dict[Any, Any]:
        """Starlette/FastAPI ``exception_handlers`` for otelperf errors that carry a status.

        ``perf.wrap(app)`` installs them itself; with ``middleware=[perf.middleware()]``
        pass ``exception_handlers=perf.exception_handlers()`` so an exhausted pool is
        answered with its ``exhausted_status`` (503) instead of a 500.
        """
        from otelperf.http._errors import exception_handlers

        return exception_handlers()

    def middleware(self) -> Any:
        """A Starlette/FastAPI ``Middleware`` entry for this Perf; pair it with :meth:`lifespan`."""
        from starlette.middleware import Middleware

        from otelperf.http import OtelperfMiddleware

        return Middleware(OtelperfMiddleware, perf=self)

    def lifespan(self, inner: Any = None) -> Any:
        """A Starlette/FastAPI ``lifespan=``: otelperf's startup/shutdown around ``inner``."""
        from otelperf._lifespan import lifespan_context

        return lifespan_context(self, inner)

    # --- resources ---------------------------------------------------------------

    def cache(self, name: str) -> Cache:
        """The cache ``name`` from ``caches:`` (async get/set/delete, ``_sync`` twins)."""
        cache: Cache = lookup(self.resources.caches, "caches", name)
        return cache

    def cached(self, name: str, **options: Any) -> Any:
        """Decorator caching a function's results in cache ``name``; see ``Cache.cached``.

        Usable at import time: the cache opens with the app's lifespan.
        """
        return self.cache(name).cached(**options)

    def pool(self, name: str) -> Pool:
        """The PostgreSQL pool ``name``: ``async with perf.pool(name).connection() as conn``."""
        pool: Pool = lookup(self.resources.pools, "pools", name)
        return pool

    def batcher(self, name: str) -> Batcher:
        """The batcher ``name`` from ``batchers:``: ``await perf.batcher(n).put(item)``."""
        batcher: Batcher = lookup(self.resources.batchers, "batchers", name)
        return batcher

    def profile(self, hook: str) -> Any:
        """Decorator and context manager profiling under the ``profiling.hooks`` entry ``hook``."""
        if self.resources.profiling is None:
            raise OtelperfError(
                f"no profiling hook named {hook!r}: the config has no profiling.hooks"
            )
        return self.resources.profiling.profile(hook)

    def add_readiness_check(self, name: str, check: Check) -> None:
        """Make readiness fail while ``check`` (sync or async) returns False, raises or hangs."""
        self.health.add_check(name, check)


def load(
    source: ConfigSource,
    *,
    environ: Mapping[str, str] | None = None,
    tracer_provider: trace_api.TracerProvider | None = None,
    meter_provider: metrics_api.MeterProvider | None = None,
    **options: Any,
) -> Perf:
    """Load a config file (or mapping) and return a :class:`Perf` built from it.

    Raises :class:`otelperf.ConfigError` naming file, line, key and what would be
    valid for every problem in the config. Pass ``tracer_provider`` and/or
    ``meter_provider`` to report through providers the application installed
    itself; otelperf then leaves their shutdown to the application.
    """
    config = load_config(source, environ=environ)
    name = None if isinstance(source, Mapping) else os.fspath(source)
    return Perf(
        config,
        source=name,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        **options,
    )
