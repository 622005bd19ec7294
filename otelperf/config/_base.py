"""Shared pieces of the config models: the base model, secret keys, name checks."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

SECRET_KEYS = frozenset(
    {"conninfo", "url", "headers", "signing_key", "token", "password", "dsn", "api_key"}
)
"""Keys whose values are never shown: not by ``otelperf check``, not in error messages."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _check_names(names: dict[str, object], what: str) -> None:
    for name in names:
        if not _NAME.fullmatch(name):
            raise PydanticCustomError(
                "name",
                "invalid {what} name {shown}; use letters, digits, '_', '-' or '.', "
                "starting with a letter or '_'",
                {"what": what, "name": name, "shown": repr(name)},
            )
