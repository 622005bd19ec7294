"""Route templates (``http.route``) for Starlette and FastAPI apps, mounts and sub-apps included.

Starlette's routers record the route they matched in ``scope["route"]``; a mounted
sub-app's router overwrites it with the inner route, whose own ``path`` lacks the
mount prefix. So the full template of every route object is computed once, by
walking the route tree from the root app, and looked up by identity per request:
no regex matching on the request path.
"""

from __future__ import annotations

import re
import time
from typing import Any

__all__ = ["RouteTable", "find_routes_owner"]

_CONVERTER = re.compile(r"\{([^}:]+):[^}]+\}")
_MAX_DEPTH = 16


def _clean(path: str) -> str:
    # "/items/{item_id:int}" -> "/items/{item_id}": the converter is an implementation detail.
    return _CONVERTER.sub(r"{\1}", path)


def find_routes_owner(app: Any) -> Any | None:
    """The first object with ``routes`` found by following ``.app`` through middleware."""
    obj = app
    for _ in range(_MAX_DEPTH):
        if obj is None:
            return None
        if isinstance(getattr(obj, "routes", None), list):
            return obj
        obj = getattr(obj, "app", None)
    return None


class RouteTable:
    """Maps route objects to their full templates, built lazily from the app's route tree."""

    def __init__(self, root: Any) -> None:
        self._root = root
        self._templates: dict[int, str] = {}
        self._keep: list[Any] = []  # keeps ids valid: routes stay alive while mapped
        self._built_at = -1.0

    def _build(self, root: Any) -> None:
        templates: dict[int, str] = {}
        keep: list[Any] = []

        def walk(owner: Any, prefix: str, depth: int) -> None:
            if depth > _MAX_DEPTH:
                return
            for route in getattr(owner, "routes", None) or ():
                path = getattr(route, "path", None)
                if not isinstance(path, str):
                    continue
                full = prefix + path
                keep.append(route)
                inner = getattr(route, "routes", None)
                is_mount = type(route).__name__ in ("Mount", "Host") or hasattr(route, "_base_app")
                if is_mount:
                    if type(route).__name__ == "Host":
                        full = prefix
                    child = find_routes_owner(getattr(route, "_base_app", None) or route)
                    if inner:
                        walk(route, full, depth + 1)
                    elif child is not None and child is not route:
                        walk(child, full, depth + 1)
                    else:
                        templates.setdefault(id(route), _clean(full) + "/{path}")
                        continue
                    # Left in scope["route"] only when nothing inside matched: a 404.
                    templates.setdefault(id(route), "")
                else:
                    templates.setdefault(id(route), _clean(full) or "/")

        walk(root, "", 0)
        self._templates, self._keep = templates, keep
        self._built_at = time.monotonic()

    def template(self, route: Any, scope_app: Any = None) -> str | None:
        """The full template of ``route`` (from ``scope["route"]``), or None when unknown."""
        key = id(route)
        found = self._templates.get(key)
        if found is not None:
            return found or None
        # A route added after the first request, or an app we could not see at startup.
        if time.monotonic() - self._built_at > 1.0:
            root = self._root if self._root is not None else find_routes_owner(scope_app)
            if root is not None:
                self._build(root)
                found = self._templates.get(key)
                if found is not None:
                    return found or None
        path = getattr(route, "path", None)
        return _clean(path) if isinstance(path, str) and path else None

    def match(self, scope: Any) -> str | None:
        """Find the template by matching the request against the route tree.

        Only for requests that were answered but left no ``scope["route"]`` (FastAPI
        does not record mounted plain ASGI apps there); unmatched 404s never get here.
        """
        owner = self._root if self._root is not None else find_routes_owner(scope.get("app"))
        probe = {**scope, "root_path": scope.get("app_root_path", "")}
        if self._built_at < 0 and owner is not None:
            self._build(owner)
        for _ in range(_MAX_DEPTH):
            if owner is None:
                return None
            for route in getattr(owner, "routes", None) or ():
                matches = getattr(route, "matches", None)
                if matches is None:
                    continue
                try:
                    found, child = matches(probe)
                except Exception:  # a foreign route type: skip it, never fail the request
                    continue
                if getattr(found, "value", 0) == 0:
                    continue
                template = self._templates.get(id(route))
                if template:
                    return template
                probe = {**probe, **child}
                owner = find_routes_owner(getattr(route, "_base_app", None) or route)
                break
            else:
                return None
        return None
