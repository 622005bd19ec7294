"""otelperf's lifespan composed around the application's own.

Startup opens every declared resource before the app's startup runs; shutdown runs
the app's shutdown, then closes and flushes otelperf's resources, then telemetry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otelperf._perf import Perf

__all__ = ["lifespan_context", "run_lifespan"]

Message = MutableMapping[str, Any]

_APP_DONE = frozenset(
    {"lifespan.startup.failed", "lifespan.shutdown.complete", "lifespan.shutdown.failed"}
)
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def run_lifespan(
    perf: Perf, app: Any, scope: MutableMapping[str, Any], receive: Receive, send: Send
) -> None:
    """Handle an ASGI lifespan scope for ``app`` with otelperf's startup and shutdown around it."""
    started = False
    startup_failed = False
    app_finished_startup = False
    app_spoke = False  # the app sent a lifespan message: it takes part in the protocol

    async def wrapped_receive() -> Message:
        nonlocal started, startup_failed
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await perf.astart()
            except Exception:
                # The app's lifespan reports the failure to the server (Starlette does).
                startup_failed = True
                raise
            started = True
        return message

    async def wrapped_send(message: Message) -> None:
        nonlocal app_finished_startup, app_spoke
        app_spoke = True
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            app_finished_startup = True
            perf.health.ready = True
        elif kind in _APP_DONE:
            await perf.ashutdown()  # also when the app's own startup or shutdown failed
        await send(message)

    try:
        await app(scope, wrapped_receive, wrapped_send)
    except BaseException:
        if startup_failed or app_spoke:
            if perf.started:
                await perf.ashutdown()
            raise
        # The app does not speak lifespan (it raised on the scope): run ours alone.
        await _own_lifespan(perf, receive, send, started=started)
        return
    if not app_spoke:
        # The app returned without taking part; keep otelperf's lifespan running.
        await _own_lifespan(perf, receive, send, started=started)
    elif perf.started:
        await perf.ashutdown()  # the app ended its lifespan without a shutdown message


async def _own_lifespan(perf: Perf, receive: Receive, send: Send, *, started: bool) -> None:
    if not started:  # the startup message is still to come
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            await perf.astart()  # cleans up after itself when it fails
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
    perf.health.ready = True
    await send({"type": "lifespan.startup.complete"})
    while True:
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await perf.ashutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def lifespan_context(
    perf: Perf,
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """A Starlette/FastAPI ``lifespan=`` that runs otelperf's startup/shutdown around ``inner``."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        await perf.astart()  # cleans up after itself when it fails
        try:
            if inner is None:
                perf.health.ready = True
                yield None
            else:
                async with inner(app) as state:
                    perf.health.ready = True
                    yield state
        finally:
            await asyncio.shield(perf.ashutdown())

    return lifespan
