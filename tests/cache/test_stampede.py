"""Stampede protection: single flight, the fleet-wide lock (also across processes), none."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.cache.conftest import Caches
from tests.cache.test_cache import running

CALLERS = 100
ORIGIN_SECONDS = 0.05


def _stampede(caches: Caches, backend: str, **config: Any) -> tuple[list[Any], int, Any]:
    cache = caches.build(backend, **config)
    calls: list[int] = []

    @cache.cached(key="hot")
    async def origin() -> dict[str, int]:
        calls.append(1)
        await asyncio.sleep(ORIGIN_SECONDS)
        return {"n": len(calls)}

    async def inner() -> list[Any]:
        async with running(cache, caches.telemetry):
            return await asyncio.gather(*(origin() for _ in range(CALLERS)))

    return asyncio.run(inner()), len(calls), cache


def test_single_flight_calls_the_origin_once(caches: Caches, backend: str) -> None:
    """100 concurrent misses on one cold key call a 50 ms origin exactly once (the default)."""
    results, calls, cache = _stampede(caches, backend)
    assert calls == 1
    assert results == [{"n": 1}] * CALLERS
    assert cache.stats()["coalesced"] == CALLERS - 1
    assert caches.telemetry.value("otelperf.cache.coalesced") == CALLERS - 1
    assert caches.telemetry.value("otelperf.cache.origin.duration") == 1


@pytest.mark.parametrize("backend", ["redis", "tiered"], indirect=True)
def test_lock_mode_calls_the_origin_once(caches: Caches, backend: str) -> None:
    """With stampede: lock, 100 concurrent misses in one process call the origin once."""
    results, calls, _ = _stampede(caches, backend, stampede="lock")
    assert calls == 1
    assert results == [{"n": 1}] * CALLERS


def test_without_protection_every_caller_computes(caches: Caches) -> None:
    """stampede: none lets every concurrent miss through (what the other modes prevent)."""
    _, calls, _ = _stampede(caches, "memory", stampede="none")
    assert calls == CALLERS


def test_sync_single_flight_across_threads(caches: Caches, backend: str) -> None:
    """Threads missing one key together call a plain function once."""
    cache = caches.started(backend)
    calls: list[int] = []
    gate = threading.Barrier(20)

    @cache.cached(key="hot")
    def origin() -> int:
        calls.append(1)
        time.sleep(ORIGIN_SECONDS)
        return 7

    results: list[int] = []

    def worker() -> None:
        gate.wait()
        results.append(origin())

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [7] * 20
    assert len(calls) == 1


def test_the_leader_being_cancelled_does_not_fail_the_others(caches: Caches) -> None:
    """The shared computation survives its first caller going away."""
    cache = caches.build("memory")
    calls: list[int] = []

    @cache.cached(key="hot")
    async def origin() -> int:
        calls.append(1)
        await asyncio.sleep(ORIGIN_SECONDS)
        return 5

    async def inner() -> list[Any]:
        async with running(cache, caches.telemetry):
            leader = asyncio.ensure_future(origin())
            await asyncio.sleep(0)
            others = [asyncio.ensure_future(origin()) for _ in range(5)]
            await asyncio.sleep(0)
            leader.cancel()
            return await asyncio.gather(*others)

    assert asyncio.run(inner()) == [5] * 5
    assert calls == [1]


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_a_lock_left_by_a_vanished_holder_expires_and_is_taken(
    caches: Caches, backend: str, redis_url: str
) -> None:
    """A lock whose holder died is taken once its lock_ttl ends; the origin runs once."""
    import redis

    cache = caches.build(backend, stampede="lock", lock_wait="5s")
    client = redis.Redis.from_url(redis_url)
    client.set(cache._lock_key(cache.key("hot")), "someone-dead", px=200)
    client.close()
    calls: list[int] = []

    @cache.cached(key="hot")
    async def origin() -> int:
        calls.append(1)
        return 3

    async def inner() -> list[Any]:
        async with running(cache, caches.telemetry):
            return await asyncio.gather(*(origin() for _ in range(10)))

    started = time.monotonic()
    assert asyncio.run(inner()) == [3] * 10
    assert calls == [1]
    assert 0.15 < time.monotonic() - started < 3


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_waiting_longer_than_lock_wait_calls_the_origin(
    caches: Caches, backend: str, redis_url: str
) -> None:
    """When the holder takes longer than lock_wait, a waiter answers from the origin itself."""
    import redis

    cache = caches.build(backend, stampede="lock", lock_wait="100ms")
    client = redis.Redis.from_url(redis_url)
    client.set(cache._lock_key(cache.key("hot")), "slow-holder", px=10_000)
    client.close()

    @cache.cached(key="hot")
    async def origin() -> int:
        return 4

    async def inner() -> int:
        async with running(cache, caches.telemetry):
            return int(await origin())

    started = time.monotonic()
    assert asyncio.run(inner()) == 4
    assert 0.09 < time.monotonic() - started < 2


_WORKER = """
import asyncio, json, sys
import redis
from pydantic import TypeAdapter
from opentelemetry import trace, metrics
from otelperf._component import ComponentTelemetry
from otelperf.cache import build_cache
from otelperf.config._schema import CacheConfig
cfg, counter = json.loads(sys.argv[1]), sys.argv[2]
cache = build_cache("fleet", TypeAdapter(CacheConfig).validate_python(cfg))
client = redis.Redis.from_url(cfg["url"])
@cache.cached(key="hot")
async def origin():
    client.incr(counter)
    await asyncio.sleep(0.05)
    return {"built": True}
async def main():
    await cache.start(ComponentTelemetry(trace.NoOpTracer(), metrics.NoOpMeter("x")))
    print("ready", flush=True)
    sys.stdin.readline()
    results = await asyncio.gather(*(origin() for _ in range(100)))
    await cache.stop()
    print(json.dumps({"ok": all(r == {"built": True} for r in results)}), flush=True)
asyncio.run(main())
"""


def test_lock_mode_across_two_processes_calls_the_origin_once(
    caches: Caches, redis_url: str
) -> None:
    """Two processes with 100 concurrent callers each on one cold key: one origin call in all."""
    import redis

    cfg = {"backend": "redis", "url": redis_url, "namespace": caches.namespace, "stampede": "lock"}
    counter = f"{caches.namespace}:origin-calls"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps(cfg), counter],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # both are ready: release them together
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [json.loads(worker.communicate(timeout=60)[0]) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert outputs == [{"ok": True}, {"ok": True}]
    client = redis.Redis.from_url(redis_url)
    try:
        assert int(client.get(counter) or 0) == 1
    finally:
        client.close()
