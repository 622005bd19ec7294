"""Redis failing: refused, frozen, slow; the breaker; cancel safety; forged entries; secrets."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import pickle
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otelperf import OtelperfError
from otelperf.cache import Cache
from otelperf.cache._breaker import CLOSED, OPEN
from tests.cache.conftest import Caches, OwnRedis, wait_for
from tests.cache.test_cache import running

TIMEOUT = 0.1
SLACK = 0.05
FAST: dict[str, Any] = {
    "timeout": "100ms",
    "connect_timeout": "100ms",
    "breaker": {"failures": 3, "cooldown": "300ms"},
}


class Driver:
    """Calls one decorated function through the async or the sync path, timing each call."""

    def __init__(self, cache: Cache, mode: str) -> None:
        self.cache = cache
        self.mode = mode
        self.seq = 0
        self.durations: list[float] = []

        @cache.cached(key="item:{n}")
        async def aload(n: int) -> dict[str, int]:
            return {"n": n}

        @cache.cached(key="item:{n}")
        def load(n: int) -> dict[str, int]:
            return {"n": n}

        self.aload, self.load = aload, load

    async def call(self, n: int | None = None) -> None:
        """One call that must answer correctly, whatever Redis does."""
        if n is None:
            self.seq += 1
            n = self.seq
        started = time.monotonic()
        if self.mode == "async":
            result = await self.aload(n)
        else:
            result = await asyncio.to_thread(self.load, n)
        self.durations.append(time.monotonic() - started)
        assert result == {"n": n}

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not met"
            await self.call()


@pytest.mark.parametrize("mode", ["async", "sync"])
@pytest.mark.parametrize("backend", ["redis", "tiered"])
def test_refused_and_frozen_redis_fail_open_within_the_timeout_and_recover(
    caches: Caches, own_redis: OwnRedis, mode: str, backend: str
) -> None:
    """Refused, then frozen (SIGSTOP): every call answers within timeout + 50 ms; the
    breaker opens, then closes again once Redis is back."""
    cache = caches.build(backend, url=own_redis.url, **FAST)
    driver = Driver(cache, mode)
    tel = caches.telemetry

    async def inner() -> None:
        async with running(cache, tel):
            await driver.call(0)
            await driver.call(0)
            assert cache.stats()["hits"] == 1

            own_redis.stop()  # connections refused
            driver.durations.clear()
            await driver.until(lambda: cache.stats()["breaker_state"] == OPEN)
            for _ in range(5):
                await driver.call()
            assert max(driver.durations) < TIMEOUT + SLACK, driver.durations

            own_redis.start()
            await driver.until(lambda: cache.stats()["breaker_state"] == CLOSED)

            own_redis.freeze()
            driver.durations.clear()
            opened = cache.stats()["breaker_opened"]
            await driver.until(lambda: cache.stats()["breaker_opened"] > opened)
            for _ in range(5):
                await driver.call()
            assert max(driver.durations) < TIMEOUT + SLACK, driver.durations

            own_redis.thaw()
            await driver.until(lambda: cache.stats()["breaker_state"] == CLOSED)
            await driver.call(1000)
            await driver.call(1000)

    asyncio.run(inner())
    errors = {p.attributes["error.type"] for p in tel.points("otelperf.cache.errors")}
    assert {"connection", "timeout", "breaker_open"} <= errors
    assert tel.value("otelperf.cache.requests", **{"cache.result": "error"}) > 0
    assert tel.value("otelperf.cache.breaker.state") == CLOSED


def test_a_cancelled_call_leaves_no_unread_reply_on_its_connection(
    caches: Caches, own_redis: OwnRedis
) -> None:
    """A GET cancelled while the server is frozen is discarded with its connection: the
    next command on the pool never reads the old reply."""
    cache = caches.build("redis", url=own_redis.url, pool_size=1, timeout="2s")

    async def inner() -> None:
        async with running(cache, caches.telemetry):
            await cache.set("a", "value-a")
            await cache.set("b", "value-b")
            own_redis.freeze()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(cache.get("a"), 0.05)
            store = cache._redis
            assert store is not None
            assert not store._pool.idle  # the interrupted connection was not pooled
            own_redis.thaw()
            assert await cache.get("b") == "value-b"
            assert await cache.get("a") == "value-a"

    asyncio.run(inner())


def test_a_deadline_cancels_only_its_own_operation(caches: Caches, own_redis: OwnRedis) -> None:
    """The cache's own timeout does not leak as a cancellation of the caller's task."""
    cache = caches.build("redis", url=own_redis.url, timeout="100ms")

    async def inner() -> None:
        async with running(cache, caches.telemetry):
            await cache.set("a", 1)
            own_redis.freeze()
            assert await cache.get("a") is None  # timed out: a miss, not a CancelledError
            await asyncio.sleep(0.01)  # this task is not cancelled afterwards
            own_redis.thaw()

    asyncio.run(inner())


def test_a_forged_pickle_entry_is_a_miss_and_its_payload_never_runs(
    caches: Caches, tmp_path: Path, redis_url: str
) -> None:
    """Unsigned and wrongly signed pickles planted in Redis are rejected before unpickling."""
    import redis

    canary = tmp_path / "canary-ran"

    class Evil:
        def __reduce__(self) -> Any:
            return (Path.write_text, (canary, "pwned"))

    cache = caches.build("redis", serializer="pickle", signing_key="the-real-key")
    calls: list[int] = []

    @cache.cached(key="user:{uid}")
    async def profile(uid: int) -> dict[str, int]:
        calls.append(uid)
        return {"uid": uid}

    body = struct.pack(">BBdf", 1, 0, time.time() + 600, 0.0) + pickle.dumps(Evil())
    plants = {
        "unsigned": body,
        "forged": hmac.digest(b"guessed-key", body, hashlib.sha256) + body,
    }
    client = redis.Redis.from_url(redis_url)

    async def inner() -> None:
        async with running(cache, caches.telemetry):
            for uid, planted in enumerate(plants.values()):
                client.set(profile.key_for(uid), planted)
                assert await profile(uid) == {"uid": uid}
                assert await profile(uid) == {"uid": uid}  # the good entry replaced it

    try:
        asyncio.run(inner())
    finally:
        client.close()
    assert not canary.exists()
    assert calls == [0, 1]
    tel = caches.telemetry
    assert tel.value("otelperf.cache.errors", **{"error.type": "invalid_signature"}) == 2


def test_a_password_never_reaches_logs_errors_or_telemetry(
    caches: Caches, refused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A canary password in the URL stays out of log lines, errors, spans and metrics."""
    canary = "Canary-Pa55-9f3e"
    url = f"redis://user:{canary}@127.0.0.1:{refused_port}/0"
    cache = caches.build("redis", url=url, **FAST)
    tel = caches.telemetry

    @cache.cached()
    async def load(n: int) -> int:
        return n

    async def inner() -> list[str]:
        texts = []
        async with running(cache, tel):
            with tel.request_span():
                for n in range(6):
                    assert await load(n) == n
                await asyncio.sleep(0)
            try:
                await cache.ping()
            except OtelperfError as exc:
                texts.append(str(exc))
            check = cache.readiness_check()
            assert check is not None
            with pytest.raises(OtelperfError):
                await check()
        return texts

    with caplog.at_level(logging.DEBUG):
        texts = asyncio.run(inner())
        with pytest.raises(OtelperfError) as bad_url:
            caches.build("redis", url=f"redis://user:{canary}@127.0.0.1:notaport/0")
    assert texts
    assert "did not answer PING" in texts[0]
    texts.append(str(bad_url.value))
    texts.extend(r.getMessage() for r in caplog.records)
    texts.extend(str(s.attributes) + str(s.events) + str(s.status) for s in tel.spans())
    texts.extend(str(p.attributes) for p in tel.points("otelperf.cache.errors"))
    assert any("connection" in t for t in texts)
    assert not [t for t in texts if canary in t]


def test_readiness_pings_redis_and_memory_has_no_check(caches: Caches, backend: str) -> None:
    """A Redis-backed cache's readiness check answers; a memory cache has none."""
    cache = caches.build(backend)

    async def inner() -> None:
        async with running(cache, caches.telemetry):
            check = cache.readiness_check()
            if backend == "memory":
                assert check is None
            else:
                assert check is not None
                await check()
            await cache.ping()

    asyncio.run(inner())


def test_a_dead_redis_at_startup_does_not_stop_the_app(caches: Caches, refused_port: int) -> None:
    """start() does no I/O: an unreachable Redis fails open from the first call on."""
    cache = caches.build("tiered", url=f"redis://127.0.0.1:{refused_port}/0", **FAST)

    @cache.cached()
    async def load(n: int) -> int:
        return n * 2

    async def inner() -> list[int]:
        async with running(cache, caches.telemetry):
            return [await load(2), await load(2)]

    assert asyncio.run(inner()) == [4, 4]
    assert cache.stats()["hits"] == 1  # the L1 kept the value while Redis was down


def test_idle_connections_survive_a_redis_restart(caches: Caches, own_redis: OwnRedis) -> None:
    """Pooled connections closed by a restart are replaced without a failed call."""
    cache = caches.build("redis", url=own_redis.url, **FAST)

    async def inner() -> None:
        async with running(cache, caches.telemetry):
            await cache.set("k", 1)
            own_redis.stop()
            own_redis.start()
            assert await cache.set("k", 2) is True
            assert await cache.get("k") == 2

    asyncio.run(inner())
    assert cache.stats()["errors"] == 0
    assert not caches.telemetry.points("otelperf.cache.errors")


def test_frozen_redis_costs_one_timeout_per_sync_call_without_retries(
    caches: Caches, own_redis: OwnRedis
) -> None:
    """The sync client has retries off: a frozen server costs one timeout, not several."""
    cache = caches.started("redis", url=own_redis.url, timeout="200ms", connect_timeout="200ms")
    cache.set_sync("k", 1)
    own_redis.freeze()
    started = time.monotonic()
    assert cache.get_sync("k") is None
    assert time.monotonic() - started < 0.2 + SLACK
    own_redis.thaw()
    wait_for(lambda: cache.get_sync("k") == 1)
