"""The ``Cache`` facade: the async operations (the source the sync twins mirror) and ``cached``.

A lookup goes to the in-process tier (memory, or a tiered cache's L1) first, then to
Redis; a miss goes through the stampede strategy to the origin, and the result is
stored in every tier. Redis failing never fails a call: the origin answers, the
failure is counted, and the breaker skips Redis after repeated failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from opentelemetry import context as context_api

from otelperf.cache._core import _POLL, DUE, ERROR, HIT, MISS, STALE, _glob_escape
from otelperf.cache._redis import StoreError
from otelperf.cache._stampede import xfetch_due
from otelperf.cache._sync import SyncCache

__all__ = ["Cache"]

T = TypeVar("T")


class Cache(SyncCache):
    """A named cache from the config: memory, Redis, or memory in front of Redis (tiered).

    Build it with :func:`otelperf.cache.build_cache` (no I/O); ``Perf`` starts it in the
    lifespan and exposes it as ``perf.cache(name)``. Async methods are the primary API;
    each has a sync twin with the ``_sync`` suffix, for plain functions and threads::

        products = perf.cache("products")
        await products.set("product:42", {"name": "tea"}, tags=["catalog"])
        await products.get("product:42")            # {'name': 'tea'}
        products.get_sync("product:42")             # the same, from a thread
        await products.invalidate_tags("catalog")

        @products.cached(ttl="10m", key="product:{pid}", tags=["catalog"])
        async def load_product(pid: int) -> dict: ...

    Every method raises :class:`CacheNotStartedError` before ``start`` (decorating a
    function does not: the cache is looked up at call time). Redis failing never raises:
    reads miss, writes return False, decorated functions call their origin.
    """

    # --- async: reads ------------------------------------------------------------

    async def _read(self, full: str) -> tuple[int, Any, bool]:
        """(result, value, from Redis) of one lookup through every tier; counts nothing."""
        start_ns = time.time_ns() if self._memory_spans else 0
        state, value = self._memory_read(full)
        if self._memory_spans and self._memory is not None:
            self._memory_span("get", start_ns, state == HIT, full)
        redis = self._redis
        if state != MISS or redis is None:
            return state, value, False
        try:
            data = await redis.get(full)
        except StoreError:
            return ERROR, None, True
        return self._from_l2(full, data)

    async def _read_shared(self, full: str) -> tuple[int, Any, bool]:
        """:meth:`_read`, shared by the concurrent lookups of one key.

        A burst of callers on one key (the start of a stampede) makes one Redis read,
        not one each; the first caller reads without a task of its own, so an
        uncontended lookup pays a future and two dict operations.
        """
        reads = self._reads
        pending = reads.get(full)
        if pending is not None:
            try:
                result: tuple[int, Any, bool] = await asyncio.shield(pending)
                return result
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled
            except Exception:  # pragma: no cover - _read does not raise; read for ourselves
                pass
            return await self._read(full)
        future: asyncio.Future[tuple[int, Any, bool]] = asyncio.get_running_loop().create_future()
        reads[full] = future
        try:
            result = await self._read(full)
        except BaseException:
            future.cancel()  # the callers waiting on it read for themselves
            raise
        finally:
            if reads.get(full) is future:
                del reads[full]
        future.set_result(result)
        return result

    async def get(self, key: str, default: Any = None) -> Any:
        """The value cached under ``key``, or ``default`` (expired values are not returned)."""
        self._check()
        state, value, l2 = await self._read(self.key(key))
        if state == DUE:
            state = HIT
        self._count(state, l2)
        return value if state == HIT else default

    # --- async: writes -----------------------------------------------------------

    async def _store(
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
            await redis.set(full, data, int((ttl + self._swr) * 1000), self._tag_keys(tags))
        except StoreError:
            return False
        return True

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds (default: the config's) with ``tags``.

        Returns False when Redis could not take it (the failure is counted, not raised);
        raises :class:`~otelperf.SerializationError` for a value the serializer cannot store.
        """
        self._check()
        return await self._store(self.key(key), value, ttl, tuple(tags), 0.0, strict=True)

    async def delete(self, key: str) -> bool:
        """Forget ``key`` in every tier; True if some tier held it (False if Redis failed)."""
        self._check()
        full = self.key(key)
        found = self._memory.delete(full) if self._memory is not None else False
        if self._redis is not None:
            try:
                found = bool(await self._redis.delete([full])) or found
            except StoreError:
                return False
        return found

    async def invalidate_tags(self, *tags: str) -> int:
        """Forget every entry stored with one of ``tags``; how many (Redis count if any).

        A tiered cache forgets its own L1 copies at once; other processes' L1 copies
        live until their ``l1_ttl`` ends.
        """
        self._check()
        count = self._memory.invalidate_tags(tags) if self._memory is not None else 0
        if self._redis is not None and tags:
            try:
                count = await self._redis.invalidate_tags(self._tag_keys(tags))
            except StoreError:
                return 0
        return count

    async def invalidate_namespace(self, namespace: str | None = None) -> int:
        """Forget a whole part of the cache; how many entries went.

        ``None`` forgets every entry of this cache, of every version. A string forgets
        the keys under it: ``"product"`` for keys made by the template
        ``"product:{pid}"``, or ``"module.qualname"`` for every entry of one
        decorated function keyed by digest. Redis is scanned (``SCAN``), so this
        costs time in proportion to the whole database: meant for rare, deliberate use.
        """
        self._check()
        prefix = self._namespace_prefix(namespace)
        count = self._memory.invalidate_prefix(prefix) if self._memory is not None else 0
        if self._redis is not None:
            try:
                count = await self._redis.delete_matching(_glob_escape(prefix) + "*")
            except StoreError:
                return 0
        return count

    # --- async: the miss path ----------------------------------------------------

    async def get_or_set(
        self,
        key: str,
        origin: Callable[[], Awaitable[T]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> T:
        """The value under ``key``; on a miss, ``await origin()`` computes and stores it.

        Concurrent misses follow the cache's ``stampede`` strategy.
        """
        self._check()
        value: T = await self._fetch(self.key(key), origin, ttl, tuple(tags), None)
        return value

    async def _fetch(
        self,
        full: str,
        origin: Callable[[], Awaitable[Any]],
        ttl: float | None,
        tags: tuple[str, ...],
        unless: Callable[[Any], bool] | None,
    ) -> Any:
        memory = self._memory
        if memory is not None and not self._memory_spans:
            # The hot path: an in-process hit costs a dict lookup and an int increment.
            now = time.monotonic()
            entry = memory.get(full, now)
            if (
                entry is not None
                and now < entry.expires
                and not (self._early and xfetch_due(now, entry.expires, entry.delta, self._beta))
            ):
                self.telemetry.hits += 1
                return entry.value
        if self._stampede == "none":
            state, value, l2 = await self._read(full)
        else:
            state, value, l2 = await self._read_shared(full)
        self._count(HIT if state == DUE else state, l2)
        if state == HIT:
            return value
        if state == STALE:
            self._refresh_later(full, origin, ttl, tags, unless)
            return value
        if state == ERROR:
            # Redis failed (or is skipped): answer from the origin; storing would cost
            # another timeout, so only the in-process tier keeps the value.
            value, delta = await self._origin(origin)
            if unless is None or not unless(value):
                self._store_memory(full, value, self._ttl_for(ttl), delta, tags)
            return value
        if self._stampede == "none":
            return await self._compute(full, origin, ttl, tags, unless)
        value, joined = await self._flights.run(
            full, lambda: self._leader(full, origin, ttl, tags, unless)
        )
        if joined:
            self.telemetry.coalesced += 1
        return value

    async def _origin(self, origin: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
        ctx = context_api.get_current()
        started = time.perf_counter()
        try:
            value = await origin()
        except Exception as exc:
            self.telemetry.origin(time.perf_counter() - started, ctx, type(exc).__qualname__)
            raise
        delta = time.perf_counter() - started
        self.telemetry.origin(delta, ctx, None)
        return value, delta

    async def _compute(
        self,
        full: str,
        origin: Callable[[], Awaitable[Any]],
        ttl: float | None,
        tags: tuple[str, ...],
        unless: Callable[[Any], bool] | None,
    ) -> Any:
        value, delta = await self._origin(origin)
        if unless is None or not unless(value):
            await self._store(full, value, ttl, tags, delta)
        return value

    async def _leader(
        self,
        full: str,
        origin: Callable[[], Awaitable[Any]],
        ttl: float | None,
        tags: tuple[str, ...],
        unless: Callable[[Any], bool] | None,
    ) -> Any:
        redis = self._redis
        if self._stampede != "lock" or redis is None:
            return await self._compute(full, origin, ttl, tags, unless)
        lock_key, token = self._lock_key(full), secrets.token_hex(16)
        deadline = time.monotonic() + self._lock_wait
        while True:
            try:
                data, acquired = await redis.fetch_or_lock(full, lock_key, token, self._lock_ttl_ms)
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
                    return await self._compute(full, origin, ttl, tags, unless)
                finally:
                    with contextlib.suppress(StoreError):  # counted; the lock expires
                        await redis.unlock(lock_key, token)
            if time.monotonic() >= deadline:
                self.telemetry.log_once(
                    "lock_wait",
                    "waited lock_wait (%gs) for another process's recompute; calling the "
                    "origin here (raise lock_wait if the origin is slower than that)",
                    self._lock_wait,
                )
                break
            await asyncio.sleep(_POLL)
        return await self._compute(full, origin, ttl, tags, unless)

    def _refresh_later(
        self,
        full: str,
        origin: Callable[[], Awaitable[Any]],
        ttl: float | None,
        tags: tuple[str, ...],
        unless: Callable[[Any], bool] | None,
    ) -> None:
        task = asyncio.ensure_future(
            self._flights.run(full, lambda: self._refresh(full, origin, ttl, tags, unless))
        )
        self._background.add(task)
        task.add_done_callback(self._refreshed)

    def _refreshed(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.telemetry.log_once(
                "refresh", "refreshing a stale entry failed: %s: %s", type(exc).__name__, exc
            )

    async def _refresh(
        self,
        full: str,
        origin: Callable[[], Awaitable[Any]],
        ttl: float | None,
        tags: tuple[str, ...],
        unless: Callable[[Any], bool] | None,
    ) -> Any:
        redis = self._redis
        if self._stampede == "lock" and redis is not None:
            lock_key, token = self._lock_key(full), secrets.token_hex(16)
            try:
                if not await redis.try_lock(lock_key, token, self._lock_ttl_ms):
                    return None  # another process is refreshing it
            except StoreError:
                return None
            try:
                return await self._compute(full, origin, ttl, tags, unless)
            finally:
                with contextlib.suppress(StoreError):  # counted; the lock expires
                    await redis.unlock(lock_key, token)
        return await self._compute(full, origin, ttl, tags, unless)

    # --- the decorator -------------------------------------------------------------

    def cached(
        self,
        ttl: float | str | None = None,
        key: str | Callable[..., str] | None = None,
        tags: Iterable[str] = (),
        *,
        ignore: Iterable[str] = (),
        unless: Callable[[Any], bool] | None = None,
    ) -> Callable[[Callable[..., Any]], Any]:
        """A decorator caching the results of an ``async def``, a plain function or a method.

        ``ttl``: seconds or a duration such as ``"10m"`` (default: the cache's).
        ``key``: a template over the parameters (``"product:{pid}"``, ``"{self.id}"``) or
        a callable taking the same arguments; default: the qualified name plus a digest of
        the arguments (``self``/``cls`` and the names in ``ignore`` left out).
        ``tags``: tag templates, for :meth:`invalidate_tags`. ``unless``: a predicate on
        the result; when true, the result is returned but not stored.

        The wrapper gains ``key_for(*args, **kwargs)`` (the full key of a call) and
        ``invalidate(*args, **kwargs)`` (async for ``async def``). Applied at import time;
        the cache is looked up at call time, and a call before startup raises
        :class:`CacheNotStartedError`.
        """
        from otelperf.cache._decorator import make_decorator

        return make_decorator(self, ttl=ttl, key=key, tags=tags, ignore=ignore, unless=unless)
