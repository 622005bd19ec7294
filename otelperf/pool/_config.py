"""A pool's config turned into plain runtime values: psycopg_pool options, connection
options, the server it targets and the secrets to keep out of every message.

Built once by :func:`plan` (no I/O). The conninfo is parsed here, at build time, so
that a malformed one fails at load with a message that cannot echo a password: libpq's
own parse errors quote fragments of the string (``missing "=" after "cret"``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from otelperf._errors import MissingDependencyError, OtelperfError
from otelperf._redact import MASK, redact_text
from otelperf.config._schema import PoolConfig

__all__ = ["PoolPlan", "Redactor", "Target", "plan"]

_QUOTED = re.compile(r'"([^"]*)"')
_MIN_SECRET = 4  # shorter passwords are not masked verbatim: "****" everywhere for "a"


@dataclass(frozen=True)
class Redactor:
    """Masks URL/conninfo passwords (:func:`redact_text`) and the pool's known secrets."""

    secrets: tuple[str, ...] = ()

    def __call__(self, text: str) -> str:
        text = redact_text(text)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


@dataclass(frozen=True)
class Target:
    """The server a pool talks to, as telemetry and messages show it (never the password)."""

    host: str | None
    port: int | None
    dbname: str | None
    user: str | None

    @property
    def display(self) -> str:
        """``postgresql://user@host:port/dbname``, with what is known."""
        user = f"{self.user}@" if self.user else ""
        host = self.host or ""
        port = f":{self.port}" if self.port is not None and self.host else ""
        db = f"/{self.dbname}" if self.dbname else ""
        return f"postgresql://{user}{host}{port}{db}"


@dataclass(frozen=True)
class PoolPlan:
    """Everything a :class:`~otelperf.pool.Pool` needs, validated."""

    name: str
    conninfo: str = field(repr=False)
    target: Target
    redact: Redactor = field(repr=False)
    pool_options: dict[str, Any]
    """Keyword arguments of psycopg_pool's pools (sizes, timeouts, workers, name)."""
    connect_options: dict[str, Any] = field(repr=False)
    """Keyword arguments of ``connect()`` added to the conninfo (settings, timeouts)."""
    timeout: float
    check: bool
    check_idle: float
    eager: bool
    record_statements: bool
    exhausted_status: int | None


def plan(name: str, config: PoolConfig) -> PoolPlan:
    """Validate ``config`` further than the schema can (the conninfo) and plan the pool."""
    try:
        from psycopg import Error as PsycopgError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError as exc:  # pragma: no cover - the dev install has the extra
        raise MissingDependencyError("psycopg", "postgres", f"pool {name!r}") from exc
    try:
        import psycopg_pool  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("psycopg_pool", "postgres", f"pool {name!r}") from exc

    try:
        params = conninfo_to_dict(config.conninfo)
    except PsycopgError as exc:
        # libpq quotes the offending fragment, which may be part of the password.
        reason = _QUOTED.sub(_mask_quoted, str(exc).strip())
        raise OtelperfError(
            f"pool {name!r}: pools.{name}.conninfo is not a valid libpq connection string "
            f"or postgresql:// URL ({redact_text(reason)}); fix it in the config"
        ) from None
    password = str(params.get("password") or "")
    redact = Redactor((password,) if len(password) >= _MIN_SECRET else ())
    host = _first(params.get("host") or os.environ.get("PGHOST"))
    if host is not None and "@" in host:
        raise OtelperfError(
            f"pool {name!r}: the host in pools.{name}.conninfo contains '@', which means an "
            "'@' in the password was not percent-encoded; write it as %40"
        )
    port_text = _first(params.get("port") or os.environ.get("PGPORT"))
    try:
        port = int(port_text) if port_text else 5432
    except ValueError:
        raise OtelperfError(
            f"pool {name!r}: the port in pools.{name}.conninfo is not a number"
        ) from None
    user = _str(params.get("user") or os.environ.get("PGUSER"))
    dbname = _str(params.get("dbname") or os.environ.get("PGDATABASE")) or user
    target = Target(host=host, port=port if host else None, dbname=dbname, user=user)

    connect_options: dict[str, Any] = {"connect_timeout": max(2, round(config.connect_timeout))}
    options = [str(params["options"])] if params.get("options") else []
    for key, value in config.settings.items():
        if key == "application_name":
            connect_options["application_name"] = _setting(value)
        else:
            options.append(f"-c {key}={_escape(_setting(value))}")
    if options:
        connect_options["options"] = " ".join(options)

    pool_options: dict[str, Any] = {
        "name": name,
        "min_size": config.min_size,
        "max_size": config.max_size,
        "timeout": config.timeout,
        "max_waiting": config.max_waiting,
        "max_lifetime": config.max_lifetime,
        "max_idle": config.max_idle,
        "reconnect_timeout": config.reconnect_timeout,
        "num_workers": config.num_workers,
    }
    return PoolPlan(
        name=name,
        conninfo=config.conninfo,
        target=target,
        redact=redact,
        pool_options=pool_options,
        connect_options=connect_options,
        timeout=config.timeout,
        check=config.check,
        check_idle=config.check_idle,
        eager=config.open == "eager",
        record_statements=config.record_statements,
        exhausted_status=config.exhausted_status,
    )


def _mask_quoted(match: re.Match[str]) -> str:
    return match.group() if match.group(1) == "=" else f'"{MASK}"'


def _first(value: object) -> str | None:
    """The first of a comma-separated libpq list (several hosts, several ports)."""
    if value is None:
        return None
    first = str(value).split(",", 1)[0].strip()
    return first or None


def _str(value: object) -> str | None:
    return str(value) if value else None


def _setting(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _escape(value: str) -> str:
    # libpq splits `options` on spaces; a backslash keeps one inside a value.
    return value.replace("\\", "\\\\").replace(" ", "\\ ")
