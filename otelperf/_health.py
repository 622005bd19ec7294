"""Liveness and readiness endpoints, answered by the middleware before any telemetry."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from otelperf._redact import redact_text
from otelperf.config._schema import HealthConfig

__all__ = ["Check", "Health"]

Check = Callable[[], Awaitable[object] | object]
"""A readiness check: sync or async; ready unless it returns False, raises or times out."""

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Health:
    """The readiness checks registered by caches, pools, batchers and the application."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._checks: dict[str, Check] = {}
        self._in_flight: dict[str, asyncio.Future[object]] = {}
        self.ready = False
        """True between the end of startup and the start of shutdown (so balancers drain)."""

    def add_check(self, name: str, check: Check) -> None:
        """Register ``check`` under ``name``; readiness fails while it fails."""
        self._checks[name] = check

    def remove_check(self, name: str) -> None:
        """Forget the check ``name`` (a resource that closed)."""
        self._checks.pop(name, None)

    async def _run(self, name: str, check: Check) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(check):
                result = await asyncio.wait_for(check(), self.config.timeout)
            else:
                result = await self._run_sync(name, check)
            state: dict[str, Any] = {"status": "fail" if result is False else "ok"}
        except asyncio.TimeoutError:
            state = {"status": "fail", "error": f"timed out after {self.config.timeout:g}s"}
        except Exception as exc:
            state = {"status": "fail", "error": redact_text(f"{type(exc).__name__}: {exc}")[:200]}
        state["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return {name: state}

    async def _run_sync(self, name: str, check: Check) -> object:
        # A hung sync check keeps its thread; probes must not pile up threads behind it
        # (the loop's default executor also resolves DNS for every new connection).
        pending = self._in_flight.get(name)
        if pending is not None and not pending.done():
            raise RuntimeError("the previous run of this check has not finished")
        future = asyncio.ensure_future(asyncio.to_thread(check))
        self._in_flight[name] = future
        result = await asyncio.wait_for(asyncio.shield(future), self.config.timeout)
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, self.config.timeout)
        return result

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Run every check concurrently; return (ready, report)."""
        results: dict[str, Any] = {}
        for item in await asyncio.gather(*(self._run(n, c) for n, c in self._checks.items())):
            results.update(item)
        ok = self.ready and all(r["status"] == "ok" for r in results.values())
        status = "ok" if ok else ("fail" if self.ready else "not started")
        return ok, {"status": status, "checks": results}

    async def handle(self, scope: Scope, receive: Any, send: Send) -> None:
        """Answer a liveness or readiness request."""
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, {"status": "method not allowed"}, scope["method"])
            return
        if scope["path"] == self.config.readiness:
            ok, report = await self.readiness()
            await _respond(send, 200 if ok else 503, report, scope["method"])
        else:
            await _respond(send, 200, {"status": "ok"}, scope["method"])


async def _respond(send: Send, status: int, body: dict[str, Any], method: str) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else payload})
