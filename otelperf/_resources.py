"""The resources a config declares (pools, caches, batchers, profiling), built and run as one.

Built when the Perf is created (no I/O, so ``@perf.cached`` can decorate at import
time); started in the lifespan startup in dependency order (pools before the
batchers that write through them) and stopped in reverse (batchers flush through
pools that are still open); each component bounds its own stop (a batcher by its
``shutdown_deadline``), so this module adds no timeout of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from otelperf._component import Component, ComponentTelemetry
from otelperf._errors import OtelperfError
from otelperf._health import Health
from otelperf._redact import redact_text
from otelperf.config._schema import Config

if TYPE_CHECKING:
    from otelperf.batch import Batcher
    from otelperf.cache import Cache
    from otelperf.pool import Pool
    from otelperf.profiling import Profiling

__all__ = ["Resources"]

_log = logging.getLogger("otelperf")


class Resources:
    """Every declared resource, by section and name."""

    def __init__(self, config: Config) -> None:
        self.pools: dict[str, Pool] = {}
        self.caches: dict[str, Cache] = {}
        self.batchers: dict[str, Batcher] = {}
        self.profiling: Profiling | None = None
        if config.pools:
            from otelperf.pool import build_pool

            self.pools = {name: build_pool(name, cfg) for name, cfg in config.pools.items()}
        if config.caches:
            from otelperf.cache import build_cache

            self.caches = {name: build_cache(name, cfg) for name, cfg in config.caches.items()}
        if config.batchers:
            from otelperf.batch import build_batcher

            self.batchers = {
                name: build_batcher(name, cfg, self._pool_for_batcher)
                for name, cfg in config.batchers.items()
            }
        profiling = config.profiling
        if profiling.hooks or profiling.on_demand is not None:
            from otelperf.profiling import Profiling

            self.profiling = Profiling(profiling)
        self._started: list[tuple[str, Component]] = []

    def _pool_for_batcher(self, name: str) -> Pool:
        return self.pools[name]  # the config loader checked the name exists

    def in_start_order(self) -> Iterator[tuple[str, Component]]:
        """(label, component) pairs: pools, caches, batchers, profiling."""
        for section, items in (
            ("pools", self.pools),
            ("caches", self.caches),
            ("batchers", self.batchers),
        ):
            for name, component in items.items():
                yield f"{section}.{name}", component
        if self.profiling is not None:
            yield "profiling", self.profiling

    async def start(self, telemetry: ComponentTelemetry, health: Health) -> None:
        """Start every resource; if one fails, stop those already started and re-raise."""
        for label, component in self.in_start_order():
            try:
                await component.start(telemetry)
            except BaseException:
                await self.stop(health)
                raise
            self._started.append((label, component))
            check = component.readiness_check()
            if check is not None:
                health.add_check(label, check)

    async def stop(self, health: Health) -> None:
        """Stop what was started, in reverse order; an error in one does not stop the rest."""
        started, self._started = self._started, []
        for label, component in reversed(started):
            health.remove_check(label)
            try:
                await component.stop()
            except Exception as exc:
                _log.error("stopping %s failed: %s", label, redact_text(repr(exc)))

    async def ping_all(self, timeout: float) -> list[tuple[str, bool, str, float]]:
        """Open every resource as startup would, reach its service once, then close it all.

        Returns (label, ok, detail, seconds) per resource. Telemetry is a no-op here:
        this is ``otelperf check --connect``, not the application.
        """
        from opentelemetry import metrics, trace

        quiet = ComponentTelemetry(trace.NoOpTracer(), metrics.NoOpMeter("otelperf"))
        results = []
        opened: list[tuple[str, Component]] = []
        try:
            for label, component in self.in_start_order():
                began = time.perf_counter()
                try:
                    await asyncio.wait_for(component.start(quiet), timeout)
                    opened.append((label, component))
                    await asyncio.wait_for(component.ping(), timeout)
                    ok, detail = True, "ok"
                except asyncio.TimeoutError:
                    ok, detail = False, f"no answer within {timeout:g}s"
                except Exception as exc:
                    ok, detail = False, redact_text(f"{type(exc).__name__}: {exc}")
                results.append((label, ok, detail, time.perf_counter() - began))
        finally:
            for label, component in reversed(opened):
                try:
                    await component.stop()
                except Exception as exc:
                    _log.debug("closing %s after ping: %s", label, redact_text(repr(exc)))
        return results


def lookup(items: dict[str, Any], section: str, name: str) -> Any:
    """``items[name]``, or an error naming the declared ones."""
    try:
        return items[name]
    except KeyError:
        declared = ", ".join(sorted(items)) or f"none are declared under '{section}'"
        raise OtelperfError(
            f"no {section[:-1]} named {name!r} in the config; declared: {declared}"
        ) from None
