"""PoolConfig turned into psycopg_pool options: defaults, settings, conninfo validation."""

from __future__ import annotations

import inspect

import psycopg_pool
import pytest

from otelperf._errors import ConfigError, OtelperfError
from otelperf.config import load_config
from otelperf.pool import build_pool
from otelperf.pool._config import plan
from tests.pool.conftest import config

CANARY = "Canary-Pw-7c1e"


def test_defaults_are_safer_than_psycopg_pools() -> None:
    """Bounded queue, a 5 s checkout timeout, a 10 s connect timeout and a checkout check."""
    library = inspect.signature(psycopg_pool.AsyncConnectionPool).parameters
    assert library["max_waiting"].default == 0  # unbounded
    assert library["timeout"].default == 30.0
    assert library["check"].default is None
    planned = plan("main", config(conninfo="postgresql://u@h/db"))
    assert planned.pool_options["max_waiting"] == 100
    assert planned.pool_options["timeout"] == 5.0
    assert planned.connect_options["connect_timeout"] == 10
    assert planned.check is True
    assert planned.eager is True


def test_pool_options_come_from_the_config() -> None:
    """Every psycopg_pool option in the config reaches the pool's keyword arguments."""
    settings = config(
        conninfo="postgresql://u@h/db",
        min_size=1,
        max_size=7,
        timeout="2s",
        max_waiting=9,
        max_lifetime="30m",
        max_idle="1m",
        reconnect_timeout="20s",
        num_workers=2,
    )
    assert plan("main", settings).pool_options == {
        "name": "main",
        "min_size": 1,
        "max_size": 7,
        "timeout": 2.0,
        "max_waiting": 9,
        "max_lifetime": 1800.0,
        "max_idle": 60.0,
        "reconnect_timeout": 20.0,
        "num_workers": 2,
    }


def test_settings_become_libpq_options() -> None:
    """application_name is a connection parameter; other settings go to -c options, escaped."""
    settings = config(
        conninfo="postgresql://u@h/db?options=-c%20search_path%3Dapp",
        settings={
            "application_name": "shop api",
            "statement_timeout": "5s",
            "jit": False,
            "myapp.label": "a b\\c",
        },
    )
    options = plan("main", settings).connect_options
    assert options["application_name"] == "shop api"
    assert options["options"] == (
        "-c search_path=app -c statement_timeout=5s -c jit=off -c myapp.label=a\\ b\\\\c"
    )


def test_invalid_setting_names_are_refused_at_load() -> None:
    """A setting name that could smuggle other options is a config error."""
    with pytest.raises(ConfigError, match="invalid setting name"):
        load_config(
            {
                "version": 1,
                "service": {"name": "s"},
                "pools": {"main": {"conninfo": "host=h", "settings": {"a -c b": 1}}},
            }
        )


def test_target_is_described_without_the_password() -> None:
    """The server shown in messages and telemetry has user, host, port and database only."""
    for conninfo in (
        f"postgresql://app:{CANARY}@db.internal:6432/shop",
        f"host=db.internal port=6432 dbname=shop user=app password={CANARY}",
    ):
        planned = plan("main", config(conninfo=conninfo))
        assert planned.target.display == "postgresql://app@db.internal:6432/shop"
        assert CANARY not in repr(planned)


@pytest.mark.parametrize(
    "conninfo",
    [
        f"host=h password={CANARY} trailing",  # libpq: missing "=" after "trailing"
        f"host=h password=pre {CANARY}",
        f"postgresql://u:{CANARY}%zz@h/db",  # libpq: invalid percent-encoded token: "..."
        f"host=h password='{CANARY}",  # unterminated quote
        f"host=h {CANARY}=1",  # invalid connection option "..."
    ],
)
def test_a_malformed_conninfo_fails_without_echoing_it(conninfo: str) -> None:
    """libpq's parse errors quote fragments; otelperf's message masks every quoted one."""
    with pytest.raises(OtelperfError) as caught:
        build_pool("main", config(conninfo=conninfo))
    message = str(caught.value)
    assert "pools.main.conninfo" in message
    assert CANARY not in message
    assert "Canary" not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_an_unescaped_at_sign_in_the_password_is_caught() -> None:
    """'postgresql://u:p@ss@host' would send part of the password as the host name."""
    with pytest.raises(OtelperfError, match="%40") as caught:
        build_pool("main", config(conninfo="postgresql://u:p@ss-Canary@host/db"))
    assert "ss-Canary" not in str(caught.value)


def test_a_short_password_is_not_masked_verbatim() -> None:
    """Passwords under 4 characters are not replaced everywhere (that would garble text)."""
    planned = plan("main", config(conninfo="postgresql://u:ab@h/db"))
    assert planned.redact("tab") == "tab"
    assert planned.redact("password=ab") == "password=****"
