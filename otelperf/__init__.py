"""otelperf: declarative, observable performance plumbing for ASGI services.

>>> import otelperf
>>> perf = otelperf.load({"version": 1, "service": {"name": "shop-api"},
...                       "telemetry": {"exporter": "none", "set_global": False}})
>>> perf.config.service.name
'shop-api'
"""

from typing import TYPE_CHECKING

from otelperf._errors import ConfigError, ConfigProblem, MissingDependencyError, OtelperfError
from otelperf._perf import Perf, load
from otelperf._version import __version__
from otelperf.config import Config, load_config

if TYPE_CHECKING:  # type checkers see the real classes; at run time they load lazily
    from otelperf.batch import Batcher, BatcherClosedError, BatcherError, BatcherFullError
    from otelperf.cache import Cache, CacheKeyError, CacheNotStartedError, SerializationError
    from otelperf.pool import Pool, PoolExhaustedError, PoolStats
    from otelperf.profiling import Profiled

# Names of the components, imported on first use so `import otelperf` stays light.
_LAZY = {
    "BatcherClosedError": "otelperf.batch",
    "BatcherError": "otelperf.batch",
    "BatcherFullError": "otelperf.batch",
    "Batcher": "otelperf.batch",
    "Cache": "otelperf.cache",
    "CacheKeyError": "otelperf.cache",
    "CacheNotStartedError": "otelperf.cache",
    "SerializationError": "otelperf.cache",
    "Pool": "otelperf.pool",
    "PoolExhaustedError": "otelperf.pool",
    "PoolStats": "otelperf.pool",
    "Profiled": "otelperf.profiling",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otelperf' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Batcher",
    "BatcherClosedError",
    "BatcherError",
    "BatcherFullError",
    "Cache",
    "CacheKeyError",
    "CacheNotStartedError",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "MissingDependencyError",
    "OtelperfError",
    "Perf",
    "Pool",
    "PoolExhaustedError",
    "PoolStats",
    "Profiled",
    "SerializationError",
    "__version__",
    "load",
    "load_config",
]
