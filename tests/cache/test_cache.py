"""The Cache facade on every backend: get/set/delete, TTL, tags, namespaces, the decorator."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from otelperf.cache import Cache, CacheNotStartedError
from otelperf.cache._stampede import xfetch_due
from tests.cache.conftest import Caches, Telemetry, wait_for


def attrs(span: Any) -> dict[str, Any]:
    """A span's attributes as a plain dict."""
    return dict(span.attributes or {})


@asynccontextmanager
async def running(cache: Cache, telemetry: Telemetry) -> AsyncIterator[Cache]:
    """The cache started and stopped inside the current event loop."""
    await cache.start(telemetry.component)
    try:
        yield cache
    finally:
        await cache.stop()


def test_set_get_delete_round_trip(caches: Caches, backend: str, telemetry: Telemetry) -> None:
    """A stored value is read back, and gone once deleted, counted as hits and misses."""
    cache = caches.build(backend)

    async def inner() -> None:
        async with running(cache, telemetry):
            assert await cache.get("k") is None
            assert await cache.set("k", {"a": [1, 2]}) is True
            assert await cache.get("k") == {"a": [1, 2]}
            assert await cache.delete("k") is True
            assert await cache.get("k", "default") == "default"
            assert await cache.delete("k") is False

    asyncio.run(inner())
    assert (cache.stats()["hits"], cache.stats()["misses"]) == (1, 2)
    assert telemetry.value("otelperf.cache.requests", **{"cache.result": "miss"}) == 2


def test_sync_twins_see_what_async_wrote(caches: Caches, backend: str) -> None:
    """get_sync/set_sync/delete_sync work from threads on the same entries."""
    cache = caches.started(backend)
    assert cache.set_sync("k", [1, "x"]) is True
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(cache.get_sync("k")))
    thread.start()
    thread.join()
    assert results == [[1, "x"]]
    assert cache.delete_sync("k") is True
    assert cache.get_sync("k") is None


def test_entries_expire_after_their_ttl(caches: Caches, backend: str) -> None:
    """An entry is served while fresh and missed once its TTL is over, in every tier."""
    cache = caches.started(backend)
    cache.set_sync("short", 1, ttl=0.3)
    cache.set_sync("long", 2, ttl=60)
    assert cache.get_sync("short") == 1
    wait_for(lambda: cache.get_sync("short") is None, timeout=5)
    assert cache.get_sync("long") == 2


def test_ttl_jitter_spreads_expiry_upwards(caches: Caches) -> None:
    """With ttl_jitter, TTLs lie between ttl and ttl * (1 + jitter), and differ."""
    cache = caches.build("memory", ttl="100s", ttl_jitter="50%")
    ttls = {cache._ttl_for(None) for _ in range(50)}
    assert all(100.0 <= t <= 150.0 for t in ttls)
    assert len(ttls) > 10


def test_tags_invalidate_their_entries_only(caches: Caches, backend: str) -> None:
    """invalidate_tags forgets tagged entries in every tier and keeps the rest."""
    cache = caches.build(backend)

    async def inner() -> None:
        async with running(cache, telemetry=caches.telemetry):
            await cache.set("p1", 1, tags=["catalog", "p1"])
            await cache.set("p2", 2, tags=["catalog"])
            await cache.set("u1", 3, tags=["users"])
            assert await cache.get("p1") == 1  # fills a tiered cache's L1 too
            assert await cache.invalidate_tags("catalog") == 2
            assert [await cache.get(k) for k in ("p1", "p2", "u1")] == [None, None, 3]
            assert cache.invalidate_tags_sync("users") == 1
            assert cache.get_sync("u1") is None

    asyncio.run(inner())


def test_namespaces_and_versions_partition_the_cache(caches: Caches, backend: str) -> None:
    """A sub-namespace or the whole cache can be dropped; another version never sees entries."""
    cache = caches.build(backend)
    other_version = caches.build(backend, version="2")

    async def inner() -> None:
        async with running(cache, caches.telemetry), running(other_version, caches.telemetry):
            await cache.set("product:1", "a")
            await cache.set("product:2", "b")
            await cache.set("user:1", "c")
            await other_version.set("product:1", "v2")
            assert await cache.get("product:1") == "a"
            assert await other_version.get("product:1") == "v2"
            assert await cache.invalidate_namespace("product") == 2
            assert await cache.get("user:1") == "c"
            assert await cache.get("product:2") is None
            # Redis holds user:1 and version 2's entry; a memory cache only its own.
            assert cache.invalidate_namespace_sync() == (1 if backend == "memory" else 2)
            assert await cache.get("user:1") is None

    asyncio.run(inner())


# --- the decorator -------------------------------------------------------------------


def test_async_functions_are_cached_by_arguments(caches: Caches, backend: str) -> None:
    """An async def is called once per distinct argument set; key_for and invalidate work."""
    cache = caches.build(backend)
    calls: list[int] = []

    @cache.cached(ttl="1m", tags=["t"])
    async def load(pid: int, lang: str = "en") -> dict[str, Any]:
        calls.append(pid)
        return {"pid": pid, "lang": lang}

    async def inner() -> None:
        async with running(cache, caches.telemetry):
            assert await load(1) == {"pid": 1, "lang": "en"}
            assert await load(1, lang="en") == {"pid": 1, "lang": "en"}
            assert await load(2) == {"pid": 2, "lang": "en"}
            assert calls == [1, 2]
            assert load.key_for(1).startswith(f"{caches.namespace}:c:v1:")
            assert await load.invalidate(1) is True
            await load(1)
            assert calls == [1, 2, 1]

    asyncio.run(inner())


def test_plain_functions_methods_and_classmethods_are_cached(caches: Caches, backend: str) -> None:
    """Sync functions, methods (self left out of the key) and classmethods use the sync path."""
    cache = caches.started(backend)
    calls: list[str] = []

    @cache.cached(key="sq:{x}")
    def square(x: int) -> int:
        calls.append("square")
        return x * x

    class Repo:
        def __init__(self, ident: int) -> None:
            self.ident = ident

        @cache.cached()
        def find(self, pid: int) -> list[int]:
            calls.append("find")
            return [pid]

        @classmethod
        @cache.cached()
        def total(cls, n: int) -> int:
            calls.append("total")
            return n + 1

        @cache.cached(key="owned:{self.ident}:{pid}")
        def owned(self, pid: int) -> list[int]:
            calls.append("owned")
            return [self.ident, pid]

    assert [square(3), square(3)] == [9, 9]
    assert [Repo(1).find(5), Repo(2).find(5)] == [[5], [5]]
    assert [Repo.total(1), Repo.total(1)] == [2, 2]
    assert [Repo(1).owned(5), Repo(2).owned(5), Repo(1).owned(5)] == [[1, 5], [2, 5], [1, 5]]
    assert calls == ["square", "find", "total", "owned", "owned"]
    assert square.invalidate(3) is True


def test_a_call_before_start_or_after_stop_says_what_to_do(caches: Caches) -> None:
    """Decorating is fine at import time; calling before startup raises a clear error."""
    cache = caches.build("memory")

    @cache.cached()
    async def load(pid: int) -> int:
        return pid

    @cache.cached()
    def load_sync(pid: int) -> int:
        return pid

    before = r"cache 'c' was used before it started.*lifespan"
    with pytest.raises(CacheNotStartedError, match=before):
        asyncio.run(load(1))
    with pytest.raises(CacheNotStartedError):
        load_sync(1)

    async def inner() -> None:
        async with running(cache, caches.telemetry):
            assert await load(1) == 1

    asyncio.run(inner())
    with pytest.raises(CacheNotStartedError, match="after it stopped"):
        cache.get_sync("x")


def test_unless_keeps_results_out_of_the_cache(caches: Caches, backend: str) -> None:
    """A result for which unless() is true is returned but not stored."""
    cache = caches.started(backend)
    calls: list[int] = []

    @cache.cached(unless=lambda result: result is None)
    def find(pid: int) -> int | None:
        calls.append(pid)
        return None if pid < 0 else pid

    assert [find(-1), find(-1), find(1), find(1)] == [None, None, 1, 1]
    assert calls == [-1, -1, 1]


def test_origin_errors_propagate_and_are_not_cached(caches: Caches, backend: str) -> None:
    """An exception from the function reaches the caller, is timed, and nothing is stored."""
    cache = caches.build(backend)
    attempts: list[int] = []

    @cache.cached()
    async def flaky(pid: int) -> int:
        attempts.append(pid)
        if len(attempts) == 1:
            raise LookupError("first call fails")
        return pid

    async def inner() -> None:
        async with running(cache, caches.telemetry):
            with pytest.raises(LookupError):
                await flaky(1)
            assert await flaky(1) == 1
            assert await flaky(1) == 1

    asyncio.run(inner())
    assert attempts == [1, 1]
    tel = caches.telemetry
    assert tel.value("otelperf.cache.origin.duration", **{"error.type": "LookupError"}) == 1


def test_bad_decorator_arguments_fail_at_decoration(caches: Caches) -> None:
    """A bad ttl, a generator or a wrong template is refused when the decorator is applied."""
    from otelperf import OtelperfError

    cache = caches.build("memory")
    with pytest.raises(OtelperfError, match="invalid ttl '10x'"):
        cache.cached(ttl="10x")
    with pytest.raises(OtelperfError, match="ttl must be positive"):
        cache.cached(ttl=0)
    with pytest.raises(OtelperfError, match="generator"):

        @cache.cached()
        def rows() -> Any:
            yield 1

    with pytest.raises(OtelperfError, match="'nope'"):

        @cache.cached(key="{nope}")
        def f(x: int) -> int:
            return x


# --- stale-while-revalidate and early recomputation ------------------------------------


def test_stale_while_revalidate_serves_the_old_value_and_refreshes(
    caches: Caches, backend: str
) -> None:
    """Past its TTL but within the window, the old value is served at once and refreshed."""
    cache = caches.build(backend, stale_while_revalidate="30s")
    version = [1]

    @cache.cached(ttl=0.2)
    async def read() -> int:
        return version[0]

    async def inner() -> None:
        async with running(cache, caches.telemetry):
            assert await read() == 1
            version[0] = 2
            deadline = time.monotonic() + 5
            # L1 copies of a tiered cache never go stale: they expire, then Redis has it stale.
            while cache.stats()["stale"] == 0:
                assert time.monotonic() < deadline, "entry never went stale"
                assert await read() == 1
                await asyncio.sleep(0.02)
            while await read() != 2:
                assert time.monotonic() < deadline, "stale entry never refreshed"
                await asyncio.sleep(0.01)

    asyncio.run(inner())


def test_stale_while_revalidate_from_sync_code_refreshes_in_a_thread(caches: Caches) -> None:
    """The sync path serves stale values too, refreshing them off the caller's thread."""
    cache = caches.started("memory", stale_while_revalidate="30s")
    version = [1]

    @cache.cached(ttl=0.1)
    def read() -> int:
        return version[0]

    assert read() == 1
    version[0] = 2
    wait_for(lambda: read() == 2, timeout=5)
    assert cache.stats()["stale"] > 0


def test_xfetch_recomputes_early_with_rising_probability() -> None:
    """The XFetch rule never fires far from expiry, always at expiry, and never with delta 0."""
    assert not any(xfetch_due(0.0, 1000.0, 0.001, 1.0) for _ in range(1000))
    assert all(xfetch_due(1000.0, 1000.0, 0.5, 1.0) for _ in range(100))
    assert not xfetch_due(999.0, 1000.0, 0.0, 1.0)
    near = sum(xfetch_due(999.0, 1000.0, 1.0, 1.0) for _ in range(2000))
    assert 500 < near < 1000  # P = e^-1 ≈ 0.37 with delta 1 s, 1 s before expiry


def test_early_mode_recomputes_before_expiry(caches: Caches, backend: str) -> None:
    """stampede: early refreshes a fresh entry when its recompute time outweighs its TTL left."""
    extra = {"l1_ttl": "1ms"} if backend == "tiered" else {}
    cache = caches.build(backend, stampede="early", xfetch_beta=1e9, **extra)
    calls: list[int] = []

    @cache.cached(ttl=60)
    async def slow() -> int:
        calls.append(1)
        await asyncio.sleep(0.01)
        return len(calls)

    async def inner() -> None:
        async with running(cache, caches.telemetry):
            assert await slow() == 1
            await asyncio.sleep(0.005)  # let a tiered cache's 1 ms L1 copy expire
            assert await slow() == 2  # beta so large that a 10 ms origin is always due

    asyncio.run(inner())


# --- telemetry -----------------------------------------------------------------------


def test_redis_operations_are_spans_under_the_request_and_memory_hits_are_not(
    caches: Caches, backend: str, telemetry: Telemetry
) -> None:
    """cache.get/cache.set spans sit under the request for Redis; memory hits only count."""
    cache = caches.build(backend)

    @cache.cached()
    async def load(pid: int) -> dict[str, str]:
        return {"pid": str(pid), "pad": "x" * 100}

    async def inner() -> Any:
        async with running(cache, telemetry):
            with telemetry.request_span() as request:
                await load(1)
                await load(1)
                await asyncio.sleep(0)  # the deferred telemetry runs on the loop's next turn
            return request

    request = asyncio.run(inner())
    spans = telemetry.spans()
    if backend == "memory":
        assert spans == []
    else:
        names = [s.name for s in spans]
        assert names.count("cache.get") == (1 if backend == "tiered" else 2)
        assert names.count("cache.set") == 1
        for span in spans:
            assert span.parent is not None
            assert span.parent.span_id == request.get_span_context().span_id
            assert attrs(span)["cache.name"] == "c"
            assert "cache.key" not in attrs(span)
        gets = [s for s in spans if s.name == "cache.get"]
        assert attrs(gets[0])["cache.hit"] is False
        if backend == "redis":
            assert attrs(gets[1])["cache.hit"] is True
            assert attrs(gets[1])["cache.item_size"] > 100
        assert telemetry.value("otelperf.cache.operation.duration", **{"cache.operation": "get"})
        assert telemetry.value("otelperf.cache.item.size") == 1
    hits = telemetry.value("otelperf.cache.requests", **{"cache.result": "hit"})
    assert hits == 1
    if backend == "tiered":
        assert telemetry.value("otelperf.cache.requests", **{"cache.tier": "l1"}) == 1


def test_no_span_outside_a_sampled_request_and_keys_only_when_asked(
    caches: Caches, telemetry: Telemetry, redis_url: str
) -> None:
    """Cache calls outside any trace make no root spans; record_keys adds cache.key."""
    quiet = caches.build("redis", name="quiet")
    loud = caches.build("redis", name="loud", record_keys=True)

    async def inner() -> None:
        async with running(quiet, telemetry), running(loud, telemetry):
            await quiet.get("k")
            with telemetry.request_span():
                await loud.get("secret-user-42")
                await asyncio.sleep(0)

    asyncio.run(inner())
    spans = telemetry.spans()
    assert [attrs(s)["cache.name"] for s in spans] == ["loud"]
    assert attrs(spans[0])["cache.key"].endswith(":secret-user-42")
    assert telemetry.value("otelperf.cache.operation.duration", **{"cache.name": "quiet"}) == 1


def test_memory_spans_on_request_and_evictions_are_counted(
    caches: Caches, telemetry: Telemetry
) -> None:
    """spans: true gives memory hits spans; LRU evictions and entries are observable."""
    cache = caches.build("memory", spans=True, max_entries=2)

    async def inner() -> None:
        async with running(cache, telemetry):
            with telemetry.request_span():
                for key in ("a", "b", "c"):
                    await cache.set(key, key)
                assert await cache.get("c") == "c"

    asyncio.run(inner())
    assert [attrs(s)["cache.hit"] for s in telemetry.spans()] == [True]
    assert telemetry.value("otelperf.cache.evictions") == 1
    assert telemetry.value("otelperf.cache.entries") == 2


@pytest.mark.parametrize("backend", ["redis", "tiered"], indirect=True)
def test_an_unstorable_result_is_returned_and_counted(caches: Caches, backend: str) -> None:
    """A decorated function returning what JSON cannot hold still answers; the error is counted."""
    cache = caches.started(backend)
    marker = object()

    @cache.cached()
    def weird() -> object:
        return marker

    assert weird() is marker
    assert caches.telemetry.value("otelperf.cache.errors", **{"error.type": "serialize"}) == 1
    from otelperf.cache import SerializationError

    with pytest.raises(SerializationError):
        cache.set_sync("k", marker)


# --- across processes ----------------------------------------------------------------

_CHILD = """
import asyncio, json, sys
from pydantic import TypeAdapter
from opentelemetry import trace, metrics
from otelperf._component import ComponentTelemetry
from otelperf.cache import build_cache
from otelperf.config._schema import CacheConfig
cfg = TypeAdapter(CacheConfig).validate_python(json.loads(sys.argv[1]))
cache = build_cache("shared", cfg)
calls = []
@cache.cached()
async def price(sku: str, opts: dict) -> dict:
    calls.append(sku)
    return {"sku": sku, "price": 42}
async def main():
    await cache.start(ComponentTelemetry(trace.NoOpTracer(), metrics.NoOpMeter("x")))
    value = await price("tea", {"size": "L", "tags": ["a", "b"]})
    await cache.stop()
    key = price.key_for("tea", {"tags": ["a", "b"], "size": "L"})
    print(json.dumps({"value": value, "calls": len(calls), "key": key}))
asyncio.run(main())
"""


def test_a_second_process_hits_what_the_first_stored(caches: Caches, redis_url: str) -> None:
    """Two processes (different hash seeds) compute the same key: the second one hits."""
    import json

    cfg = json.dumps({"backend": "redis", "url": redis_url, "namespace": caches.namespace})
    results = []
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, cfg], capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed}, check=True,
        )  # fmt: skip
        results.append(json.loads(out.stdout))
    assert [r["calls"] for r in results] == [1, 0]
    assert results[0]["value"] == results[1]["value"] == {"sku": "tea", "price": 42}
    assert results[0]["key"] == results[1]["key"]
