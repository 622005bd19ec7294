"""The profile endpoint: lists kept profiles and serves their files, to token holders only.

``GET <path>`` answers a JSON list (newest first) of the profiles' metadata, each
with the URLs of its files; ``GET <path>/<id>.<ext>`` serves one file. A request
without the on-demand header, or with a wrong token, is not answered here at all:
it goes on to the application, as if the endpoint did not exist. The endpoint
answers one request at a time (a second concurrent one gets 429), so downloading
profiles cannot crowd out the service. HTML profiles are served sandboxed
(``Content-Security-Policy: sandbox allow-scripts``): their script cannot read the
application's cookies or call it with them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

from otelperf.profiling._select import OnDemand, route_path
from otelperf.profiling._store import ProfileStore

__all__ = ["Endpoint"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_TYPES = {
    "json": b"application/json",
    "speedscope.json": b"application/json",
    "html": b"text/html; charset=utf-8",
    "pstats": b"application/octet-stream",
}


class Endpoint:
    """``<path>`` and the files below it, behind the on-demand token."""

    def __init__(self, path: str, store: ProfileStore, guard: OnDemand) -> None:
        self.path = path.rstrip("/")
        self._prefix = self.path + "/"
        self._store = store
        self._guard = guard
        self._busy = threading.Lock()

    def owns(self, path: str) -> bool:
        """Whether ``path`` is the endpoint's (the token is checked by :meth:`handle`)."""
        return path == self.path or path.startswith(self._prefix)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if it carries the right token; False (nothing sent) otherwise."""
        if self._guard.check(scope.get("headers", ())) is not True:
            return False
        if not self._busy.acquire(blocking=False):
            await _respond(
                send, 429, b'{"error": "busy"}', b"application/json", [(b"retry-after", b"1")]
            )
            return True
        try:
            await self._answer(scope, send)
        finally:
            self._busy.release()
        return True

    async def _answer(self, scope: Scope, send: Send) -> None:
        method = scope.get("method", "GET")
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            await _respond(
                send, 405, b'{"error": "GET only"}', b"application/json", [(b"allow", b"GET, HEAD")]
            )
            return
        path = route_path(scope)
        if path in (self.path, self._prefix):
            listed = await anyio.to_thread.run_sync(self._store.profiles)
            base = scope.get("root_path", "") + self._prefix
            for meta in listed:
                files = meta.get("files")
                if isinstance(files, dict):
                    meta["urls"] = {k: base + str(v) for k, v in files.items()}
                meta["urls"] = {**meta.get("urls", {}), "metadata": f"{base}{meta.get('id')}.json"}
            body = json.dumps({"profiles": listed}, indent=1).encode()
            await _respond(send, 200, body, b"application/json", head=head)
            return
        name = path[len(self._prefix) :]
        content = await anyio.to_thread.run_sync(self._store.read, name)
        if content is None:
            await _respond(
                send, 404, b'{"error": "no such profile"}', b"application/json", head=head
            )
            return
        extension = name.split(".", 1)[1]
        extra: list[tuple[bytes, bytes]] = []
        if extension == "html":
            extra.append((b"content-security-policy", b"sandbox allow-scripts"))
        elif extension == "pstats":
            extra.append((b"content-disposition", f'attachment; filename="{name}"'.encode()))
        await _respond(send, 200, content, _TYPES[extension], extra, head=head)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
