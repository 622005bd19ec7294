"""Config loading: YAML with ${VAR} substitution, the schema, and errors naming file:line."""

from otelperf.config._load import ConfigSource, load_config
from otelperf.config._schema import Config
from otelperf.config._yaml import substitute

__all__ = ["Config", "ConfigSource", "load_config", "substitute"]
