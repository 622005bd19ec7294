"""The exceptions otelperf raises. Every one derives from :class:`OtelperfError`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "MissingDependencyError",
    "OtelperfError",
    "error_type",
]


class OtelperfError(Exception):
    """Root of every exception otelperf raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem found in a config: where it is and what is wrong.

    ``line`` and ``column`` are 1-based; they are 0 when the problem has no
    position (a mapping passed from Python, or a missing file).
    """

    source: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line:
            where = f"{where}:{self.line}:{self.column}"
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ConfigError(OtelperfError):
    """A config could not be loaded. ``problems`` lists every problem found, one per line.

    The message is the problems joined by newlines, each naming the file, line,
    column, key path, what was found and what would be valid::

        otelperf.yaml:7:10: caches.products.ttl: invalid duration '30x'; expected ...
    """

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class MissingDependencyError(OtelperfError, ImportError):
    """An optional dependency is needed for a feature the config asked for."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{feature} needs the '{module}' package, which is not installed; "
            f'install it with: pip install "otelperf[{extra}]"'
        )


for _cls in (OtelperfError, ConfigError, ConfigProblem, MissingDependencyError):
    _cls.__module__ = "otelperf"


def error_type(error: BaseException) -> str:
    """The ``error.type`` telemetry gives an exception: its class, module-qualified
    unless it is a builtin (``TimeoutError``, ``psycopg.errors.UniqueViolation``)."""
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
