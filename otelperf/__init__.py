"""otelperf: declarative, observable performance plumbing for ASGI services.

>>> import otelperf
>>> perf = otelperf.load({"version": 1, "service": {"name": "shop-api"},
...                       "telemetry": {"exporter": "none", "set_global": False}})
>>> perf.config.service.name
'shop-api'
"""

from otelperf._errors import ConfigError, ConfigProblem, MissingDependencyError, OtelperfError
from otelperf._perf import Perf, load
from otelperf._version import __version__
from otelperf.config import Config, load_config

__all__ = [
    "Config",
    "ConfigError",
    "ConfigProblem",
    "MissingDependencyError",
    "OtelperfError",
    "Perf",
    "__version__",
    "load",
    "load_config",
]
