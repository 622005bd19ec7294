"""Redis as a cache store: bounded in time, fail-fast, cancel-safe, measured.

Async calls use redis-py's connections directly from a small pool of our own, with
no retries and one deadline per operation (:mod:`._deadline`) covering the wait for
a connection, connecting, sending and reading: a refused, frozen or slow server
costs at most the cache's ``timeout``. Any failure or cancellation in the middle of
a command discards its connection, so no connection ever goes back to the pool
holding an unread reply. Sync calls use redis-py's client with the same bounds
(socket timeouts, ``retry`` off). Both report every operation (span, duration) and
feed one circuit breaker.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from opentelemetry import context as context_api

from otelperf._errors import MissingDependencyError, OtelperfError
from otelperf._redact import redact_text
from otelperf.cache._breaker import Breaker
from otelperf.cache._deadline import Deadlines
from otelperf.cache._telemetry import CacheTelemetry
from otelperf.config._schema import RedisCache, TieredCache

__all__ = ["RedisStore", "StoreError"]

T = TypeVar("T")

_SET_TAGGED = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local px = tonumber(ARGV[2])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  local t = redis.call('PTTL', KEYS[i])
  if t == -1 or (t >= 0 and t < px) then redis.call('PEXPIRE', KEYS[i], px) end
end
return 1
"""
_INVALIDATE_TAGS = """
local n = 0
for i = 1, #KEYS do
  local members = redis.call('SMEMBERS', KEYS[i])
  for j = 1, #members, 500 do
    n = n + redis.call('UNLINK', unpack(members, j, math.min(j + 499, #members)))
  end
  redis.call('UNLINK', KEYS[i])
end
return n
"""
_FETCH_OR_LOCK = """
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


REDIS_SPAN_ATTRIBUTES: dict[str, Any] = {"db.system.name": "redis"}
"""What every Redis operation's span carries: few attributes, each costs microseconds."""


class StoreError(Exception):
    """A Redis operation failed; ``kind`` is timeout, connection, response or breaker_open."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(redact_text(message or kind))
        self.kind = kind


def _import_redis(cache: str) -> Any:
    try:
        import redis
        import redis.asyncio
    except ImportError:
        raise MissingDependencyError("redis", "redis", f"cache {cache!r} (backend redis)") from None
    return redis


class _Pool:
    """At most ``size`` connections; idle ones reused last-in first-out."""

    def __init__(self, factory: Callable[[], Any], size: int) -> None:
        self.factory = factory
        self.size = size
        self.idle: deque[Any] = deque()
        self.count = 0
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.closed = False

    async def acquire(self) -> tuple[Any, bool]:
        """A connected connection, and whether it was reused (it may have gone stale)."""
        if self.idle:
            return self.idle.pop(), True
        if self.count >= self.size:
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release(waiter.result(), True)
                raise
            if conn is not None:
                return conn, True
            # None: a connection was discarded, its slot is ours to fill.
        else:
            self.count += 1
        conn = self.factory()
        try:
            await conn.connect()
        except BaseException:
            self._discard(conn)
            raise
        return conn, False

    def release(self, conn: Any, ok: bool) -> None:
        """Give ``conn`` back; a connection that did not finish cleanly is closed instead."""
        if not ok or self.closed:
            self._discard(conn)
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def _discard(self, conn: Any) -> None:
        self.count -= 1
        _abort(conn)
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.count += 1
                waiter.set_result(None)
                return

    async def close(self) -> None:
        self.closed = True
        idle, self.idle = list(self.idle), deque()
        for conn in idle:
            self.count -= 1
            try:
                await conn.disconnect()
            except Exception:  # pragma: no cover - closing a dead connection
                _abort(conn)


def _abort(conn: Any) -> None:
    """Close a connection now, without awaiting (cancel paths, other event loops)."""
    writer = getattr(conn, "_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is not None:
        transport.abort()
    for attr in ("_reader", "_writer"):
        if hasattr(conn, attr):
            setattr(conn, attr, None)


class RedisStore:
    """One cache's Redis: async and sync clients from one URL, one breaker, one deadline."""

    def __init__(
        self,
        name: str,
        config: RedisCache | TieredCache,
        telemetry: CacheTelemetry,
        breaker: Breaker,
    ) -> None:
        redis = _import_redis(name)
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.name = name
        self.timeout = config.timeout
        self.telemetry = telemetry
        self.breaker = breaker
        self._errors = redis.exceptions
        common: dict[str, Any] = {"socket_connect_timeout": config.connect_timeout}
        # No CLIENT SETINFO on connect: one round trip less, and one read less that a
        # frozen server could stall. redis-py 7 renamed the switch.
        if _takes_driver_info():
            common["driver_info"] = None
        else:  # pragma: no cover - redis-py < 7
            common.update(lib_name=None, lib_version=None)
        try:
            template = redis.asyncio.ConnectionPool.from_url(
                config.url, socket_timeout=None, retry=AsyncRetry(NoBackoff(), 0), **common
            )
            self._sync_pool = redis.BlockingConnectionPool.from_url(
                config.url,
                max_connections=config.pool_size,
                timeout=config.timeout,
                socket_timeout=config.timeout,
                retry=Retry(NoBackoff(), 0),
                **common,
            )
        except (ValueError, TypeError) as exc:
            raise OtelperfError(
                redact_text(f"cache {name!r}: invalid Redis URL {config.url!r}: {exc}")
            ) from None
        self._sync = redis.Redis(connection_pool=self._sync_pool)
        conn_class, conn_kwargs = template.connection_class, dict(template.connection_kwargs)
        self._pool = _Pool(lambda: conn_class(**conn_kwargs), config.pool_size)
        self._deadlines = Deadlines(config.timeout)
        self._scripts = {
            src: self._sync.register_script(src)
            for src in (_SET_TAGGED, _INVALIDATE_TAGS, _FETCH_OR_LOCK, _RELEASE)
        }

    # --- lifecycle -------------------------------------------------------------

    async def close(self) -> None:
        """Close every connection (async and sync)."""
        self._deadlines.close()
        await self._pool.close()
        self._pool.closed = False
        self._sync_pool.disconnect()

    # --- the async wire --------------------------------------------------------

    async def _run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write on one connection; every reply, in order."""
        deadlines = self._deadlines
        op = deadlines.arm()
        conn: Any = None
        ok = False
        errors = self._errors
        try:
            for attempt in (0, 1):
                conn, reused = await self._pool.acquire()
                try:
                    if len(commands) == 1:
                        await conn.send_command(*commands[0], check_health=False)
                    else:
                        packed = conn.pack_commands(commands)
                        await conn.send_packed_command(packed, check_health=False)
                    replies: list[Any] = []
                    failed: Exception | None = None
                    for _ in commands:
                        try:
                            replies.append(await conn.read_response())
                        except errors.ResponseError as exc:
                            replies.append(exc)
                            failed = failed or exc
                    ok = True
                except (errors.ConnectionError, OSError):
                    # A reused connection the server closed while it sat idle (a restart,
                    # an idle timeout): one fresh connection, within the same deadline.
                    if reused and attempt == 0:
                        self._pool.release(conn, False)
                        conn = None
                        continue
                    raise
                if failed is not None:
                    kind = "noscript" if isinstance(failed, errors.NoScriptError) else "response"
                    raise StoreError(kind, f"{type(failed).__name__}: {failed}")
                return replies
            raise AssertionError("unreachable")  # pragma: no cover
        except asyncio.CancelledError:
            if deadlines.expired(op):
                raise StoreError("timeout", f"no answer within {self.timeout:g}s") from None
            raise
        except StoreError:
            raise
        except Exception as exc:
            error = _store_error(errors, exc)
            if error is None:
                raise
            raise error from None
        finally:
            deadlines.disarm(op)
            if conn is not None:
                self._pool.release(conn, ok)

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        sha = self._scripts[script].sha
        try:
            return (await self._run([("EVALSHA", sha, len(keys), *keys, *args)]))[0]
        except StoreError as exc:
            if exc.kind != "noscript":
                raise
        return (await self._run([("EVAL", script, len(keys), *keys, *args)]))[0]

    async def _measured(
        self, op: str, call: Callable[[], Any], key: str | None = None, size: int | None = None
    ) -> Any:
        """Run ``call`` (a coroutine factory) through the breaker, timed and reported."""
        telemetry = self.telemetry
        breaker = self.breaker
        if not breaker.allow():
            telemetry.error(op, "breaker_open")
            raise StoreError("breaker_open")
        ctx = context_api.get_current()
        start_ns = time.time_ns()
        started = time.perf_counter()
        try:
            result = await call()
        except StoreError as exc:
            duration = time.perf_counter() - started
            self._failed(op, exc)
            telemetry.operation(op, start_ns, duration, ctx, error=exc.kind, key=key)
            raise
        except BaseException:
            breaker.abandon()
            raise
        breaker.success()
        duration = time.perf_counter() - started
        if op == "get":
            hit = result is not None
            telemetry.operation(
                op, start_ns, duration, ctx, hit=hit, size=len(result) if hit else None, key=key
            )
        else:
            telemetry.operation(op, start_ns, duration, ctx, size=size, key=key)
        return result

    def _failed(self, op: str, exc: StoreError) -> None:
        self.telemetry.error(op, exc.kind)
        if exc.kind == "response":  # the server answered: it is up
            self.breaker.success()
            self.telemetry.log_once(f"{op}:response", "Redis refused %s: %s", op, exc)
        else:
            self.breaker.failure(exc.kind)
            self.telemetry.log_once(
                f"{op}:{exc.kind}", "Redis %s failed (%s): %s; answering from the origin",
                op, exc.kind, exc,
            )  # fmt: skip

    # --- async operations ------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The bytes stored at ``key``, or None; raises :class:`StoreError`."""

        async def call() -> Any:
            return (await self._run([("GET", key)]))[0]

        result: bytes | None = await self._measured("get", call, key)
        return result

    async def set(self, key: str, data: bytes, px: int, tags: Sequence[str] = ()) -> None:
        """Store ``data`` for ``px`` ms, adding ``key`` to the tag sets ``tags``."""

        async def call() -> Any:
            if tags:
                return await self._eval(_SET_TAGGED, [key, *tags], [data, px])
            return await self._run([("SET", key, data, "PX", px)])

        await self._measured("set", call, key, len(data))

    async def delete(self, keys: Sequence[str]) -> int:
        """Delete ``keys``; how many existed."""

        async def call() -> Any:
            return (await self._run([("UNLINK", *keys)]))[0]

        return int(await self._measured("delete", call))

    async def invalidate_tags(self, tag_keys: Sequence[str]) -> int:
        """Delete every key listed in the tag sets ``tag_keys``, and the sets."""

        async def call() -> Any:
            return await self._eval(_INVALIDATE_TAGS, tag_keys, [])

        return int(await self._measured("invalidate", call))

    async def delete_matching(self, pattern: str) -> int:
        """Delete every key matching the glob ``pattern`` (SCAN, then UNLINK per batch)."""
        cursor: Any = b"0"
        total = 0
        while True:
            command = ("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)

            async def call(command: tuple[Any, ...] = command) -> Any:
                return await self._run([command])

            reply = await self._measured("invalidate", call)
            cursor, keys = reply[0]
            if keys:
                total += await self.delete(keys)
            if cursor in (b"0", 0, "0"):
                return total

    async def fetch_or_lock(
        self, key: str, lock_key: str, token: str, px: int
    ) -> tuple[bytes | None, bool]:
        """The value at ``key`` if there is one; else whether the lock was taken."""

        async def call() -> Any:
            return await self._eval(_FETCH_OR_LOCK, [key, lock_key], [token, px])

        reply = await self._measured("lock", call, key)
        if reply[0] == 1:
            return bytes(reply[1]), False
        return None, reply[0] == 2

    async def try_lock(self, lock_key: str, token: str, px: int) -> bool:
        """Take the lock if nobody holds it."""

        async def call() -> Any:
            return (await self._run([("SET", lock_key, token, "NX", "PX", px)]))[0]

        return bool(await self._measured("lock", call))

    async def unlock(self, lock_key: str, token: str) -> None:
        """Release the lock if it is still ours."""

        async def call() -> Any:
            return await self._eval(_RELEASE, [lock_key], [token])

        await self._measured("lock", call)

    async def ping(self) -> None:
        """PING within the timeout (not through the breaker: a readiness check must look)."""
        try:
            reply = (await self._run([("PING",)]))[0]
        except StoreError as exc:
            raise OtelperfError(
                f"cache {self.name!r}: Redis did not answer PING ({exc.kind}): {exc}"
            ) from None
        if reply not in (b"PONG", "PONG", True):
            raise OtelperfError(f"cache {self.name!r}: Redis answered PING with {reply!r}")

    # --- sync operations -------------------------------------------------------

    def _sync_call(self, op: str, call: Callable[[], T], key: str | None = None,
                   size: int | None = None) -> T:  # fmt: skip
        telemetry = self.telemetry
        breaker = self.breaker
        if not breaker.allow():
            telemetry.error(op, "breaker_open")
            raise StoreError("breaker_open")
        ctx = context_api.get_current()
        start_ns = time.time_ns()
        started = time.perf_counter()
        errors = self._errors
        try:
            try:
                result = call()
            except Exception as exc:
                error = _store_error(errors, exc)
                if error is None:
                    raise
                raise error from None
        except StoreError as exc:
            self._failed(op, exc)
            telemetry.operation(
                op, start_ns, time.perf_counter() - started, ctx, error=exc.kind, key=key,
                deferred=False,
            )  # fmt: skip
            raise
        except BaseException:
            breaker.abandon()
            raise
        breaker.success()
        duration = time.perf_counter() - started
        if op == "get":
            hit = result is not None
            size = len(result) if isinstance(result, bytes) else None
            telemetry.operation(
                op, start_ns, duration, ctx, hit=hit, size=size, key=key, deferred=False
            )
        else:
            telemetry.operation(op, start_ns, duration, ctx, size=size, key=key, deferred=False)
        return result

    def get_sync(self, key: str) -> bytes | None:
        """Sync :meth:`get`."""
        result: bytes | None = self._sync_call("get", lambda: self._sync.get(key), key)
        return result

    def set_sync(self, key: str, data: bytes, px: int, tags: Sequence[str] = ()) -> None:
        """Sync :meth:`set`."""
        if tags:
            script = self._scripts[_SET_TAGGED]
            self._sync_call(
                "set", lambda: script(keys=[key, *tags], args=[data, px]), key, len(data)
            )
        else:
            self._sync_call("set", lambda: self._sync.set(key, data, px=px), key, len(data))

    def delete_sync(self, keys: Sequence[str]) -> int:
        """Sync :meth:`delete`."""
        return int(self._sync_call("delete", lambda: self._sync.unlink(*keys)))

    def invalidate_tags_sync(self, tag_keys: Sequence[str]) -> int:
        """Sync :meth:`invalidate_tags`."""
        script = self._scripts[_INVALIDATE_TAGS]
        return int(self._sync_call("invalidate", lambda: script(keys=list(tag_keys), args=[])))

    def delete_matching_sync(self, pattern: str) -> int:
        """Sync :meth:`delete_matching`."""
        cursor: Any = 0
        total = 0
        while True:
            cursor, keys = self._sync_call(
                "invalidate", functools.partial(self._sync.scan, cursor, match=pattern, count=1000)
            )
            if keys:
                total += self.delete_sync(keys)
            if cursor in (b"0", 0, "0"):
                return total

    def fetch_or_lock_sync(
        self, key: str, lock_key: str, token: str, px: int
    ) -> tuple[bytes | None, bool]:
        """Sync :meth:`fetch_or_lock`."""
        script = self._scripts[_FETCH_OR_LOCK]
        reply = self._sync_call("lock", lambda: script(keys=[key, lock_key], args=[token, px]), key)
        if reply[0] == 1:
            return bytes(reply[1]), False
        return None, reply[0] == 2

    def try_lock_sync(self, lock_key: str, token: str, px: int) -> bool:
        """Sync :meth:`try_lock`."""
        return bool(
            self._sync_call("lock", lambda: self._sync.set(lock_key, token, nx=True, px=px))
        )

    def unlock_sync(self, lock_key: str, token: str) -> None:
        """Sync :meth:`unlock`."""
        script = self._scripts[_RELEASE]
        self._sync_call("lock", lambda: script(keys=[lock_key], args=[token]))


@functools.cache
def _takes_driver_info() -> bool:
    """Whether this redis-py names the CLIENT SETINFO switch ``driver_info`` (7 and later)."""
    import redis.asyncio

    return (
        "driver_info" in inspect.signature(redis.asyncio.connection.AbstractConnection).parameters
    )


def _store_error(errors: Any, exc: Exception) -> StoreError | None:
    """What a redis-py failure means to the cache (``errors`` is ``redis.exceptions``);
    None for anything else, which propagates as it is."""
    if isinstance(exc, errors.TimeoutError):
        return StoreError("timeout", str(exc))
    if isinstance(exc, (errors.ConnectionError, OSError)):
        return StoreError("connection", f"{type(exc).__name__}: {exc}")
    if isinstance(exc, errors.RedisError):
        return StoreError("response", f"{type(exc).__name__}: {exc}")
    return None
