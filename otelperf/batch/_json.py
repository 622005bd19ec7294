"""Items as JSON: strict for the jsonl sink, never failing for the dead-letter file."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from pathlib import PurePath
from typing import Any

__all__ = ["dumps_item", "dumps_lenient"]


def _plain(value: Any) -> Any:
    """The JSON form of the common non-JSON types; TypeError for anything else."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal, PurePath)):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"an item of type {type(value).__name__} is not JSON serializable")


def dumps_item(item: Any) -> str:
    """One compact JSON line for ``item``; TypeError/ValueError when it cannot be encoded."""
    return json.dumps(item, default=_plain, ensure_ascii=False, separators=(",", ":"))


def _repr(value: Any) -> Any:
    try:
        return _plain(value)
    except TypeError:
        return {"repr": _safe_repr(value)}


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)[:10_000]
    except Exception as exc:  # a broken __repr__ must not cost the other items
        return f"<{type(value).__qualname__} whose repr failed: {type(exc).__name__}>"


def dumps_lenient(record: dict[str, Any]) -> str:
    """``record`` as one JSON line; what JSON cannot hold becomes ``{"repr": ...}``."""
    try:
        return json.dumps(record, default=_repr, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):  # circular data, NaN-free mode, ...
        safe = {k: v for k, v in record.items() if k != "item"}
        safe["item"] = {"repr": _safe_repr(record.get("item"))}
        return json.dumps(safe, default=_repr, ensure_ascii=False, separators=(",", ":"))
