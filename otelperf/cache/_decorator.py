"""``cache.cached(...)``: the decorator for ``async def`` functions, plain functions and methods.

Whether the function is a coroutine function is decided once, when the decorator is
applied; the wrapper then calls the async or the sync path of the cache, with no
check per call. The cache itself is only consulted at call time, so decorating at
import time (before the Perf starts) is fine.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from otelperf._errors import OtelperfError
from otelperf.cache._keys import CacheKeyError, KeyMaker
from otelperf.config._units import parse_duration

if TYPE_CHECKING:
    from otelperf.cache._cache import Cache

__all__ = ["make_decorator"]


def _ttl(value: float | str | None, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except Exception as exc:
            raise OtelperfError(f"{where}: invalid ttl {value!r}: {exc}") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise OtelperfError(f"{where}: ttl must be seconds or a duration such as '10m'")
    if seconds <= 0:
        raise OtelperfError(f"{where}: ttl must be positive, found {value!r}")
    return seconds


def make_decorator(
    cache: Cache,
    *,
    ttl: float | str | None,
    key: str | Callable[..., str] | None,
    tags: Iterable[str],
    ignore: Iterable[str],
    unless: Callable[[Any], bool] | None,
) -> Callable[[Any], Any]:
    """The decorator ``cache.cached(...)`` returns."""
    where = f"cache {cache.name!r}: cached()"
    seconds = _ttl(ttl, where)
    tag_list = (tags,) if isinstance(tags, str) else tuple(tags)
    ignored = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    if key is not None and not isinstance(key, str) and not callable(key):
        raise CacheKeyError(f"{where}: key must be a template string or a callable")

    def decorate(func: Any) -> Any:
        if isinstance(func, (classmethod, staticmethod)):
            return type(func)(decorate(func.__func__))
        if not callable(func):
            raise OtelperfError(f"{where} decorates functions, not {type(func).__name__}")
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise OtelperfError(
                f"{where}: {func.__qualname__} is a generator; cache a function that returns "
                "the list instead"
            )
        maker = KeyMaker(func, key, tag_list, ignored)
        prefix = cache.prefix
        part = maker.part
        make_tags = maker.tags

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if not cache._started:
                    cache._check()
                return await cache._fetch(
                    prefix + part(args, kwargs),
                    lambda: func(*args, **kwargs),
                    seconds,
                    make_tags(args, kwargs),
                    unless,
                )

            async def invalidate(*args: Any, **kwargs: Any) -> bool:
                return await cache.delete(part(args, kwargs))

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                if not cache._started:
                    cache._check()
                return cache._fetch_sync(
                    prefix + part(args, kwargs),
                    lambda: func(*args, **kwargs),
                    seconds,
                    make_tags(args, kwargs),
                    unless,
                )

            def invalidate(*args: Any, **kwargs: Any) -> bool:  # type: ignore[misc]
                return cache.delete_sync(part(args, kwargs))

            wrapper = sync_wrapper

        def key_for(*args: Any, **kwargs: Any) -> str:
            """The full key a call with these arguments reads and writes."""
            return prefix + part(args, kwargs)

        invalidate.__doc__ = "Forget the entry a call with these arguments would read."
        wrapper.key_for = key_for
        wrapper.invalidate = invalidate
        wrapper.cache = cache
        return wrapper

    return decorate
