"""The sync twins of the cache operations, for plain functions and threads.

They mirror the async operations of ``_cache.py`` line for line, using the sync
Redis client, thread-based single flight, ``time.sleep`` while waiting for another
process's recompute, and a small thread pool for stale-while-revalidate refreshes.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from opentelemetry import context as context_api

from otelperf.cache._core import _POLL, DUE, ERROR, HIT, MISS, STALE, CacheCore, _glob_escape
from otelperf.cache._redis import StoreError
from otelperf.cache._stampede import xfetch_due

__all__ = ["SyncCache"]

T = TypeVar("T")


class SyncCache(CacheCore):
    """A cache's sync operations (``*_sync``)."""

    # --- sync twins ----------------------------------------------------------------

    def _read_sync(self, full: str) -> tuple[int, Any, bool]:
        start_ns = time.time_ns() if self._memory_spans else 0
        state, value = self._memory_read(full)
        if self._memory_spans and self._memory is not None:
            self._memory_span("get", start_ns, state == HIT, full)
        redis = self._redis
        if state != MISS or redis is None:
            return state, value, False
        try:
            data = redis.get_sync(full)
        except StoreError:
            return ERROR, None, True
        return self._from_l2(full, data)

    def get_sync(self, key: str, default: Any = None) -> Any:
        """Sync :meth:`get`."""
        self._check()
        state, value, l2 = self._read_sync(self.key(key))
        if state == DUE:
            state = HIT
        self._count(state, l2)
        return value if state == HIT else default

    def _store_sync(
        self,
        full: str,
        value: Any,
        ttl: float | None,
        tags: tuple[str, ...],
        delta: float,
        strict: bool = False,
    ) -> bool:
        ttl = self._ttl_for(ttl)
        self._store_memory(full, value, ttl, delta, tags)
        redis = self._redis
        if redis is None:
            return True
        data = self._encode(value, ttl, delta, strict)
        if data is None:
            return False
        try:
            redis.set_sync(full, data, int((ttl + self._swr) * 1000), self._tag_keys(tags))
        except StoreError:
            return False
        return True

    def set_sync(
        self, key: str, value: Any, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> bool:
        """Sync :meth:`set`."""
        self._check()
        return self._store_sync(self.key(key), value, ttl, tuple(tags), 0.0, strict=True)

    def delete_sync(self, key: str) -> bool:
        """Sync :meth:`delete`."""
        self._check()
        full = self.key(key)
        found = self._memory.delete(full) if self._memory is not None else False
        if self._redis is not None:
            try:
                found = bool(self._redis.delete_sync([full])) or found
            except StoreError:
                return False
        return found

    def invalidate_tags_sync(self, *tags: str) -> int:
        """Sync :meth:`invalidate_tags`."""
        self._check()
        count = self._memory.invalidate_tags(tags) if self._memory is not None else 0
        if self._redis is not None and tags:
            try:
                count = self._redis.invalidate_tags_sync(self._tag_keys(tags))
            except StoreError:
                return 0
        return count

    def invalidate_namespace_sync(self, namespace: str | None = None) -> int:
        """Sync :meth:`invalidate_namespace`."""
        self._check()
        prefix = self._namespace_prefix(namespace)
        count = self._memory.invalidate_prefix(prefix) if self._memory is not None else 0
        if self._redis is not None:
            try:
                count = self._redis.delete_matching_sync(_glob_escape(prefix) + "*")
            except StoreError:
                return 0
        return count

    def get_or_set_sync(
        self,
        key: str,
        origin: Callable[[], T],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> T:
        """Sync :meth:`get_or_set`: ``origin()`` is a plain function."""
        self._check()
        value: T = self._fetch_sync(self.key(key), origin, ttl, tuple(tags), None)
        return value

    def _fetch_sync(
        self,
        full: str,
        origin: Callable[[], Any],
        ttl: float | None,
        tags: tuple[str, ...],
        unless: Callable[[Any], bool] | None,
    ) -> Any:
        memory = self._memory
        if memory is not None and not self._memory_spans:
            now = time.monotonic()
            entry = memory.get(full, now)
            if (
                entry is not None
                and now < entry.expires
                and not (self._early and xfetch_due(now, entry.expires, entry.delta, self._beta))
            ):
                self.telemetry.hits += 1
                return entry.value
        state, value, l2 = self._read_sync(full)
        self._count(HIT if state == DUE else state, l2)
        if state == HIT:
            return value
        if state == STALE:
            self._refresh_later_sync(full, origin, ttl, tags, unless)
            return value
        if state == ERROR:
            value, delta = self._origin_sync(origin)
            if unless is None or not unless(value):
                self._store_memory(full, value, self._ttl_for(ttl), delta, tags)
            return value
        if self._stampede == "none":
            return self._compute_sync(full, origin, ttl, tags, unless)
        value, joined = self._sync_flights.run(
            full, lambda: self._leader_sync(full, origin, ttl, tags, unless)
        )
        if joined:
            self.telemetry.coalesced += 1
        return value

    def _origin_sync(self, origin: Callable[[], Any]) -> tuple[Any, float]:
        ctx = context_api.get_current()
        started = time.perf_counter()
        try:
            value = origin()
        except Exception as exc:
            self.telemetry.origin(time.perf_counter() - started, ctx, type(exc).__qualname__)
            raise
        delta = time.perf_counter() - started
        self.telemetry.origin(delta, ctx, None)
        return value, delta

    def _compute_sync(
        self,
        full: str,
        origin: Callable[[], Any],
        ttl: float | None,
        tags: tuple[str, ...],
        unless: Callable[[Any], bool] | None,
    ) -> Any:
        value, delta = self._origin_sync(origin)
        if unless is None or not unless(value):
            self._store_sync(full, value, ttl, tags, delta)
        return value

    def _leader_sync(
        self,
        full: str,
        origin: Callable[[], Any],
        ttl: float | None,
        tags: tuple[str, ...],
        unless: Callable[[Any], bool] | None,
    ) -> Any:
        redis = self._redis
        if self._stampede != "lock" or redis is None:
            return self._compute_sync(full, origin, ttl, tags, unless)
        lock_key, token = self._lock_key(full), secrets.token_hex(16)
        deadline = time.monotonic() + self._lock_wait
        while True:
            try:
                data, acquired = redis.fetch_or_lock_sync(full, lock_key, token, self._lock_ttl_ms)
            except StoreError:
                break
            if data is not None:
                stored = self._decode(data)
                if stored is not None and self._classify(stored, time.time()) in (HIT, DUE):
                    self._fill_l1(full, stored, tags)
                    self.telemetry.coalesced += 1
                    return stored.value
            if acquired:
                try:
                    return self._compute_sync(full, origin, ttl, tags, unless)
                finally:
                    with contextlib.suppress(StoreError):  # counted; the lock expires
                        redis.unlock_sync(lock_key, token)
            if time.monotonic() >= deadline:
                self.telemetry.log_once(
                    "lock_wait",
                    "waited lock_wait (%gs) for another process's recompute; calling the "
                    "origin here (raise lock_wait if the origin is slower than that)",
                    self._lock_wait,
                )
                break
            time.sleep(_POLL)
        return self._compute_sync(full, origin, ttl, tags, unless)

    def _refresh_later_sync(
        self,
        full: str,
        origin: Callable[[], Any],
        ttl: float | None,
        tags: tuple[str, ...],
        unless: Callable[[Any], bool] | None,
    ) -> None:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix=f"otelperf-cache-{self.name}"
                )
            executor = self._executor
        ctx = context_api.get_current()

        def refresh() -> None:
            token = context_api.attach(ctx)
            try:
                self._sync_flights.run(
                    full, lambda: self._refresh_sync(full, origin, ttl, tags, unless)
                )
            except Exception as exc:
                self.telemetry.log_once(
                    "refresh", "refreshing a stale entry failed: %s: %s", type(exc).__name__, exc
                )
            finally:
                context_api.detach(token)

        executor.submit(refresh)

    def _refresh_sync(
        self,
        full: str,
        origin: Callable[[], Any],
        ttl: float | None,
        tags: tuple[str, ...],
        unless: Callable[[Any], bool] | None,
    ) -> Any:
        redis = self._redis
        if self._stampede == "lock" and redis is not None:
            lock_key, token = self._lock_key(full), secrets.token_hex(16)
            try:
                if not redis.try_lock_sync(lock_key, token, self._lock_ttl_ms):
                    return None
            except StoreError:
                return None
            try:
                return self._compute_sync(full, origin, ttl, tags, unless)
            finally:
                with contextlib.suppress(StoreError):  # counted; the lock expires
                    redis.unlock_sync(lock_key, token)
        return self._compute_sync(full, origin, ttl, tags, unless)
