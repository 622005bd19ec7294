"""Durations, sizes and ratios as written in a config, parsed once at load."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "Duration",
    "Ratio",
    "Size",
    "parse_duration",
    "parse_ratio",
    "parse_size",
    "written",
]

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
# One pattern per kind, used by the loader and published in the JSON schema, so an
# editor never accepts what the loader refuses (or the reverse). [0-9], not \d:
# Python's \d matches every Unicode digit, JSON Schema's only ASCII ones.
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DURATION_PART = re.compile(rf"({_NUMBER})\s*(us|µs|ms|s|m|h|d|w)")
_DURATION_PATTERN = rf"^\s*(?:(?:{_NUMBER}\s*(?:us|µs|ms|s|m|h|d|w)\s*)+|0\s*)$"
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
            "duration",
            "expected a duration, " + _DURATION_HELP + "; found {found}",
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
    if isinstance(value, str) and re.fullmatch(_DURATION_PATTERN, value):
        return sum(
            (float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(value)), 0.0
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
_SIZE_PATTERN = rf"^\s*({_NUMBER})\s*([bB]|[kKmMgG][bB]|[kKmMgG][iI][bB])?\s*$"
_SIZE_HELP = "a whole number of bytes or a number with B, kB, MB, GB, KiB, MiB or GiB (e.g. 512KiB)"


def parse_size(value: Any) -> int:
    """Return bytes for ``1024``, ``"512KiB"``, ``"1.5MB"`` (units are case-insensitive)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = re.fullmatch(_SIZE_PATTERN, value)
        if match:
            return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])
    raise PydanticCustomError(
        "size", "invalid size {found}; expected " + _SIZE_HELP, {"found": _shown(value)}
    )


# 0% to 100%, spelled so that the JSON schema can check the range too.
_PERCENT_PATTERN = r"^\s*(100(?:\.0+)?|[0-9]{1,2}(?:\.[0-9]+)?)\s*%\s*$"


def parse_ratio(value: Any) -> float:
    """Return a fraction in [0, 1] for ``"99.9%"`` or a number such as ``0.05``."""
    ratio: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ratio = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(_PERCENT_PATTERN, value)
        ratio = float(match.group(1)) / 100 if match else None
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
        {
            "anyOf": [
                {"type": "string", "pattern": _DURATION_PATTERN},
                {"const": 0},
            ],
            "examples": ["250ms", "30m"],
        }
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
                {"type": "string", "pattern": _SIZE_PATTERN},
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
                {"type": "string", "pattern": _PERCENT_PATTERN},
            ],
            "examples": ["99.9%", 0.05],
        }
    ),
]
"""A fraction in [0, 1], written as ``99.9%`` or ``0.999``."""


def written(text: str) -> Any:
    """A field default as it is written in a file (``written("5s")``).

    Defaults go through the same parser as the file (``validate_default``), and the
    schema and docs show them as users write them; typed ``Any`` because the field's
    type is the parsed one (``float`` seconds, ``int`` bytes).
    """
    return text
