"""PostgreSQL connection pools from the config, with the semconv pool metrics and query spans.

``build_pool(name, config)`` makes a :class:`Pool` (no I/O); ``Perf`` builds one per
``pools:`` entry and exposes it as ``perf.pool(name)``. Importing this package needs
neither psycopg nor psycopg_pool (they are imported when a pool is built), so
:class:`PoolExhaustedError` can be caught anywhere.
"""

from otelperf.pool._core import PoolStats
from otelperf.pool._errors import PoolExhaustedError
from otelperf.pool._pool import Pool, build_pool
from otelperf.pool._sync import SyncPool

__all__ = ["Pool", "PoolExhaustedError", "PoolStats", "SyncPool", "build_pool"]
