"""The in-process store: a bounded LRU with per-entry TTL, tags and prefix invalidation.

It keeps the Python objects themselves (no serialization: a hit is a dict lookup),
so a caller must not mutate what it gets back. It is shared by async code and by
threads, hence one lock, held only for dictionary operations.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

__all__ = ["MemEntry", "MemoryStore"]


class MemEntry:
    """One stored value. Times are ``time.monotonic()`` seconds."""

    __slots__ = ("delta", "expires", "stale_until", "tags", "value")

    def __init__(
        self, value: Any, expires: float, stale_until: float, delta: float, tags: tuple[str, ...]
    ) -> None:
        self.value = value
        self.expires = expires
        self.stale_until = stale_until
        self.delta = delta
        self.tags = tags


class MemoryStore:
    """At most ``max_entries`` entries; the least recently used goes first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, MemEntry] = OrderedDict()
        self._tags: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.evictions = 0
        """Entries pushed out to make room (expired ones dropped on access are not counted)."""

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, now: float) -> MemEntry | None:
        """The entry of ``key`` if it is fresh or still servable as stale, else None."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if now >= entry.stale_until:
                self._drop(key, entry)
                return None
            self._data.move_to_end(key)
            return entry

    def set(
        self,
        key: str,
        value: Any,
        *,
        expires: float,
        stale_until: float,
        delta: float = 0.0,
        tags: tuple[str, ...] = (),
    ) -> None:
        """Store ``value`` under ``key``, evicting the least recently used entries if full."""
        entry = MemEntry(value, expires, max(expires, stale_until), delta, tags)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None and old.tags:
                self._untag(key, old.tags)
            self._data[key] = entry
            for tag in tags:
                self._tags.setdefault(tag, set()).add(key)
            while len(self._data) > self.max_entries:
                evicted, gone = self._data.popitem(last=False)
                if gone.tags:
                    self._untag(evicted, gone.tags)
                self.evictions += 1

    def delete(self, key: str) -> bool:
        """Forget ``key``; True if it was there."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return False
            self._drop(key, entry)
            return True

    def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Forget every entry carrying one of ``tags``; the number forgotten."""
        count = 0
        with self._lock:
            for tag in tags:
                for key in self._tags.pop(tag, ()):
                    entry = self._data.get(key)
                    if entry is not None:
                        self._drop(key, entry)
                        count += 1
        return count

    def invalidate_prefix(self, prefix: str) -> int:
        """Forget every entry whose key starts with ``prefix``; the number forgotten."""
        with self._lock:
            doomed = [(k, e) for k, e in self._data.items() if k.startswith(prefix)]
            for key, entry in doomed:
                self._drop(key, entry)
        return len(doomed)

    def _drop(self, key: str, entry: MemEntry) -> None:
        del self._data[key]
        if entry.tags:
            self._untag(key, entry.tags)

    def _untag(self, key: str, tags: tuple[str, ...]) -> None:
        for tag in tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]
