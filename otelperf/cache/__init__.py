"""Caches from the ``caches:`` section: memory, Redis, or memory in front of Redis (tiered).

:func:`build_cache` turns one config entry into a :class:`Cache` (no I/O; ``Perf``
starts it in the lifespan). A cache offers async ``get/set/delete/invalidate_tags/
invalidate_namespace/get_or_set`` with ``_sync`` twins, and the ``cached()``
decorator; keys are stable across processes, concurrent misses are collapsed
(single flight, a fleet-wide Redis lock, or XFetch early recomputation), Redis
failures fall through to the origin within the cache's timeout, and everything is
reported under ``otelperf.cache.*``.
"""

from __future__ import annotations

from otelperf.cache._cache import Cache
from otelperf.cache._core import CacheNotStartedError
from otelperf.cache._keys import CacheKeyError, canonical
from otelperf.cache._serializers import SerializationError
from otelperf.config._schema import CacheConfig

__all__ = [
    "Cache",
    "CacheKeyError",
    "CacheNotStartedError",
    "SerializationError",
    "build_cache",
    "canonical",
]


def build_cache(name: str, config: CacheConfig) -> Cache:
    """The cache ``name`` described by ``config``. Does no I/O.

    Raises :class:`~otelperf.MissingDependencyError` when the config needs a package
    that is not installed (redis, msgpack, zstandard).
    """
    return Cache(name, config)
