"""What every cache shares: its parts, lifecycle, and the decisions that do no I/O.

``CacheCore`` holds the tiers (memory / L1, Redis), codec, breaker, telemetry and
single-flight tables of one cache and decides, without I/O, whether an entry is
fresh, stale or due for early recompute, which TTL applies and which keys to use.
``SyncCache`` (``_sync.py``) adds the sync operations, ``Cache`` (``_cache.py``) the
async ones, which are the source the sync ones mirror.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from opentelemetry import context as context_api

from otelperf._component import ComponentTelemetry
from otelperf._errors import OtelperfError
from otelperf.cache._breaker import Breaker
from otelperf.cache._keys import CacheKeyError, prefix_of
from otelperf.cache._memory import MemoryStore
from otelperf.cache._redis import REDIS_SPAN_ATTRIBUTES, RedisStore
from otelperf.cache._serializers import Codec, InvalidEntryError, SerializationError, Stored
from otelperf.cache._stampede import SingleFlight, SyncSingleFlight, xfetch_due
from otelperf.cache._telemetry import CacheTelemetry
from otelperf.config._schema import MemoryCache, RedisCache, TieredCache

__all__ = ["CacheCore", "CacheNotStartedError"]

T = TypeVar("T")
CacheConfigModel = MemoryCache | RedisCache | TieredCache

# Results of a lookup.
HIT, STALE, DUE, MISS, ERROR = range(5)
_POLL = 0.005
"""How often a caller waiting for another process's recompute (lock mode) looks again."""


class CacheNotStartedError(OtelperfError, RuntimeError):
    """A cache was used before its Perf started it (or after it stopped)."""


CacheNotStartedError.__module__ = "otelperf"


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class CacheCore:
    """The parts and I/O-free decisions of one cache (see :class:`~otelperf.cache.Cache`)."""

    def __init__(self, name: str, config: CacheConfigModel) -> None:
        self.name = name
        self.config = config
        self.backend = config.backend
        self.prefix = prefix_of(config.namespace, name, config.version)
        self._ttl = config.ttl
        self._jitter = config.ttl_jitter
        self._swr = config.stale_while_revalidate or 0.0
        self._stampede = config.stampede
        self._early = config.stampede == "early"
        self._beta = config.xfetch_beta
        self._memory_spans = config.spans
        tiered = isinstance(config, TieredCache)
        self._memory: MemoryStore | None = None
        self._redis: RedisStore | None = None
        self._codec: Codec | None = None
        self._breaker: Breaker | None = None
        self._l1_ttl = 0.0
        span_attributes: dict[str, Any] = {}
        if isinstance(config, (RedisCache, TieredCache)):
            span_attributes = REDIS_SPAN_ATTRIBUTES
        self.telemetry = CacheTelemetry(
            name,
            tiered=tiered,
            span_attributes=span_attributes,
            record_keys=config.record_keys,
            span_threshold=config.span_threshold,
        )
        if isinstance(config, MemoryCache):
            self._memory = MemoryStore(config.max_entries)
        else:
            self._codec = Codec(
                cache=name,
                serializer=config.serializer,
                compression=config.compression,
                signing_key=config.signing_key,
            )
            self._breaker = Breaker(
                name, failures=config.breaker.failures, cooldown=config.breaker.cooldown
            )
            self._redis = RedisStore(name, config, self.telemetry, self._breaker)
            self._lock_ttl_ms = int(config.lock_ttl * 1000)
            self._lock_wait = config.lock_wait
            breaker = self._breaker
            self.telemetry.breaker_state = lambda: breaker.state
            if isinstance(config, TieredCache):
                self._memory = MemoryStore(config.l1_max_entries)
                self._l1_ttl = config.l1_ttl
        memory = self._memory
        if memory is not None:
            self.telemetry.entries = memory.__len__
            self.telemetry.evictions = lambda: memory.evictions
        self._flights = SingleFlight()
        self._reads: dict[str, asyncio.Future[tuple[int, Any, bool]]] = {}
        self._sync_flights = SyncSingleFlight()
        self._started = False
        self._stopped = False
        self._background: set[asyncio.Task[Any]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "started" if self._started else "not started"
        return f"<Cache {self.name!r} backend={self.backend} {state}>"

    # --- the Component contract -------------------------------------------------

    async def start(self, telemetry: ComponentTelemetry) -> None:
        """Create the instruments; connections open lazily, so a Redis that is down fails open."""
        self.telemetry.bind(telemetry)
        self._started = True
        self._stopped = False

    async def stop(self) -> None:
        """Finish background refreshes, flush telemetry, close connections. Idempotent."""
        if not self._started:
            if self._redis is not None:  # a ping() before start may have connected
                await self._redis.close()
            return
        self._started = False
        self._stopped = True
        background = list(self._background)
        if background:
            await asyncio.gather(*background, return_exceptions=True)
        await self._flights.drain()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True)
        if self._redis is not None:
            await self._redis.close()
        self.telemetry.flush()

    def readiness_check(self) -> Callable[[], Awaitable[object]] | None:
        """A Redis PING within the cache's timeout; None for a memory cache."""
        return self.ping if self._redis is not None else None

    async def ping(self) -> None:
        """Reach Redis once (memory caches have nothing to reach); raise when it fails."""
        if self._redis is not None:
            await self._redis.ping()

    def stats(self) -> dict[str, int]:
        """Counts since the cache was built: hits, misses, stale, errors, coalesced, ..."""
        tm = self.telemetry
        out = {
            "hits": tm.hits,
            "misses": tm.misses,
            "stale": tm.stale,
            "errors": tm.errors,
            "coalesced": tm.coalesced,
        }
        if self._memory is not None:
            out["entries"] = len(self._memory)
            out["evictions"] = self._memory.evictions
        if self._breaker is not None:
            out["breaker_state"] = self._breaker.state
            out["breaker_opened"] = self._breaker.opened
        return out

    # --- shared, I/O-free decisions -----------------------------------------------

    def _check(self) -> None:
        if not self._started:
            when = "after it stopped" if self._stopped else "before it started"
            raise CacheNotStartedError(
                f"cache {self.name!r} was used {when}: caches open in the Perf's lifespan "
                "(perf.wrap(app), or `async with perf:` in scripts and tests); decorating "
                "a function is fine at import time, calling it must wait for startup"
            )

    def key(self, key: str) -> str:
        """The full key stored for the user key ``key`` (namespace, cache, version, key)."""
        if not isinstance(key, str):
            raise CacheKeyError(f"cache {self.name!r}: keys are str, not {type(key).__name__}")
        return self.prefix + key

    def _ttl_for(self, ttl: float | None) -> float:
        ttl = self._ttl if ttl is None else ttl
        if self._jitter:
            ttl *= 1.0 + random.random() * self._jitter
        return ttl

    def _namespace_prefix(self, namespace: str | None) -> str:
        if namespace is None:
            return f"{self.config.namespace}:{self.name}:"
        return f"{self.prefix}{namespace}:"

    def _tag_keys(self, tags: Iterable[str]) -> list[str]:
        return [f"{self.prefix}__tag__:{t}" for t in tags]

    def _lock_key(self, full: str) -> str:
        return f"{self.prefix}__lock__:{full[len(self.prefix) :]}"

    def _classify(self, stored: Stored, now: float) -> int:
        if now < stored.expires_at:
            if self._early and xfetch_due(now, stored.expires_at, stored.delta, self._beta):
                return DUE
            return HIT
        if now < stored.expires_at + self._swr:
            return STALE
        return MISS

    def _decode(self, data: bytes) -> Stored | None:
        codec = self._codec
        if codec is None:  # pragma: no cover - only Redis-backed caches decode
            return None
        try:
            return codec.decode(data)
        except InvalidEntryError as exc:
            self.telemetry.error("get", exc.kind)
            self.telemetry.log_once(
                f"decode:{exc.kind}",
                "a stored entry was rejected (%s) and treated as a miss; it was not deserialized",
                exc.kind,
            )
            return None

    def _fill_l1(self, full: str, stored: Stored, tags: tuple[str, ...] = ()) -> None:
        memory = self._memory
        if memory is not None:
            remaining = min(self._l1_ttl, stored.expires_at - time.time())
            if remaining > 0:
                expires = time.monotonic() + remaining
                memory.set(full, stored.value, expires=expires, stale_until=expires, tags=tags)

    def _from_l2(self, full: str, data: bytes | None) -> tuple[int, Any, bool]:
        """What a Redis read of ``full`` answered, as ``(state, value, True)``; a fresh
        value also fills L1."""
        if data is None:
            return MISS, None, True
        stored = self._decode(data)
        if stored is None:
            return MISS, None, True
        state = self._classify(stored, time.time())
        if state == HIT:
            self._fill_l1(full, stored)
        return state, stored.value, True

    def _memory_read(self, full: str) -> tuple[int, Any]:
        """Look in the in-process tier (memory, or L1); counts nothing."""
        memory = self._memory
        if memory is None:
            return MISS, None
        now = time.monotonic()
        entry = memory.get(full, now)
        if entry is None:
            return MISS, None
        if now < entry.expires:
            if self._early and xfetch_due(now, entry.expires, entry.delta, self._beta):
                return DUE, entry.value
            return HIT, entry.value
        return STALE, entry.value

    def _encode(self, value: Any, ttl: float, delta: float, strict: bool) -> bytes | None:
        codec = self._codec
        if codec is None:  # pragma: no cover - only Redis-backed caches encode
            return None
        try:
            return codec.encode(value, time.time() + ttl, delta)
        except SerializationError as exc:
            if strict:
                raise
            self.telemetry.error("set", "serialize")
            self.telemetry.log_once("serialize", "%s; the value is returned uncached", exc)
            return None

    def _store_memory(
        self, full: str, value: Any, ttl: float, delta: float, tags: tuple[str, ...]
    ) -> None:
        memory = self._memory
        if memory is None:
            return
        now = time.monotonic()
        if self._redis is None:
            memory.set(
                full, value, expires=now + ttl, stale_until=now + ttl + self._swr, delta=delta,
                tags=tags,
            )  # fmt: skip
        else:
            expires = now + min(self._l1_ttl, ttl)
            memory.set(full, value, expires=expires, stale_until=expires, tags=tags)

    def _count(self, state: int, l2: bool = False) -> None:
        tm = self.telemetry
        if state == HIT:
            tm.hits += 1
            if l2:
                tm.l2_hits += 1
        elif state == STALE:
            tm.stale += 1
        elif state == ERROR:
            tm.errors += 1
        else:
            tm.misses += 1

    def _memory_span(self, op: str, start_ns: int, hit: bool | None, full: str) -> None:
        self.telemetry.memory_span(
            op, start_ns, time.time_ns(), context_api.get_current(), hit, full
        )
