"""Durations, sizes and ratios as written in a config, parsed once at load."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = ["Duration", "Ratio", "Size", "parse_duration", "parse_ratio", "parse_size"]

_DURATION_UNITS = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|µs|ms|s|m|h|d|w)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_DURATION_HELP = "a number with a unit: us, ms, s, m, h, d or w (e.g. 250ms, 2s, 30m, 1h30m, 28d)"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_duration(value: Any) -> float:
    """Return seconds for ``"250ms"``, ``"1h30m"``, ``"28d"``; ``0`` is accepted bare.

    A bare non-zero number is refused: ``timeout: 5`` could mean seconds or
    milliseconds, and guessing wrong is a silent outage.
    """
    if isinstance(value, bool):
        raise PydanticCustomError(
            "duration", "expected a duration, " + _DURATION_HELP + "; found {found}",
            {"found": _shown(value)},
        )
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        raise PydanticCustomError(
            "duration",
            "found the bare number {found}; a duration needs a unit: "
            "write e.g. '{found}s' or '{found}ms'",
            {"found": value},
        )
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if _DURATION.fullmatch(text):
            return sum(
                float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text)
            )
    raise PydanticCustomError(
        "duration",
        "invalid duration {found}; expected " + _DURATION_HELP,
        {"found": _shown(value)},
    )


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_SIZE_HELP = "a whole number of bytes or a number with B, kB, MB, GB, KiB, MiB or GiB (e.g. 512KiB)"


def parse_size(value: Any) -> int:
    """Return bytes for ``1024``, ``"512KiB"``, ``"1.5MB"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise PydanticCustomError(
        "size", "invalid size {found}; expected " + _SIZE_HELP, {"found": _shown(value)}
    )


def parse_ratio(value: Any) -> float:
    """Return a fraction in [0, 1] for ``"99.9%"`` or a number such as ``0.05``."""
    ratio: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ratio = float(value)
    elif isinstance(value, str) and value.strip().endswith("%"):
        try:
            ratio = float(value.strip()[:-1]) / 100
        except ValueError:
            ratio = None
    if ratio is None or math.isnan(ratio) or not 0.0 <= ratio <= 1.0:
        raise PydanticCustomError(
            "ratio",
            "invalid ratio {found}; expected a percentage from 0% to 100% (e.g. 99.9%) "
            "or a number from 0 to 1 (e.g. 0.05)",
            {"found": _shown(value)},
        )
    return ratio


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {"type": "string", "pattern": rf"^\s*({_DURATION.pattern}|0)\s*$", "examples": ["250ms", "30m"]}
    ),
]
"""Seconds, written with a unit (``250ms``, ``2s``, ``30m``, ``28d``)."""

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([kKmMgG]i?)?[bB]?\s*$"},
            ],
            "examples": ["512KiB", "1MB"],
        }
    ),
]
"""Bytes, written bare or with a unit (``512KiB``, ``1MB``)."""

Ratio = Annotated[
    float,
    BeforeValidator(parse_ratio),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?%\s*$"},
            ],
            "examples": ["99.9%", 0.05],
        }
    ),
]
"""A fraction in [0, 1], written as ``99.9%`` or ``0.999``."""
