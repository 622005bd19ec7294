"""A canary password in the conninfo never reaches telemetry, logs or error messages."""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

import psycopg
import pytest

from otelperf._errors import OtelperfError
from otelperf.pool import PoolExhaustedError, build_pool
from tests.pool.conftest import Admin, Recorded, config

CANARY = "CanaryPw-5b2f9e"


def _with_password(postgres_dsn: str, form: str) -> str:
    """The test DSN with the canary password (the server trusts, so any password works)."""
    info: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    info["password"] = CANARY
    if form == "url":
        return (
            f"postgresql://{info.get('user', 'postgres')}:{CANARY}@{info.get('host', '127.0.0.1')}"
            f":{info.get('port', 5432)}/{info.get('dbname', 'test')}"
        )
    return psycopg.conninfo.make_conninfo("", **info)


def _everything(recorded: Recorded) -> str:
    spans = "\n".join(span.to_json() for span in recorded.spans())
    data = recorded.reader.get_metrics_data()
    return spans + (data.to_json() if data is not None else "")


@pytest.mark.parametrize("form", ["url", "keyword"])
def test_canary_password_never_leaves(
    form: str,
    postgres_dsn: str,
    app_name: str,
    admin: Admin,
    recorded: Recorded,
    refused_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Queries, failures, exhaustion, dead servers, pings: the password is in none of it."""
    caplog.set_level(logging.DEBUG)
    conninfo = _with_password(postgres_dsn, form)
    assert CANARY in conninfo
    dead_conninfo = conninfo.replace(":5432", f":{refused_port}").replace(
        "port=5432", f"port={refused_port}"
    )
    assert dead_conninfo != conninfo
    pool = build_pool(
        "main",
        config(
            conninfo=conninfo,
            min_size=1,
            max_size=1,
            record_statements=True,
            settings={"application_name": app_name},
        ),
    )
    dead = build_pool(
        "dead", config(conninfo=dead_conninfo, min_size=1, timeout="300ms", open="lazy")
    )
    errors: list[BaseException] = []

    async def inner() -> None:
        await pool.start(recorded.telemetry)
        await dead.start(recorded.telemetry)
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT %s::text", [CANARY[:4]])
                try:
                    await conn.execute("SELECT * FROM otelperf_no_such_table")
                except psycopg.Error as exc:
                    errors.append(exc)
                try:
                    async with pool.connection(timeout=0.05):
                        pass
                except PoolExhaustedError as exc:
                    errors.append(exc)
            admin.terminate()
            await admin.await_for(lambda states: states == [])
            async with pool.connection() as conn:  # recovery logs about the dead connection
                await conn.execute("SELECT 1")
            await asyncio.to_thread(_sync_use, pool)
            for attempt in (
                _checkout(dead),
                dead.ping(),
                dead.readiness_check()(),
                _eager(dead_conninfo, recorded),
            ):
                try:
                    await attempt
                except OtelperfError as exc:
                    errors.append(exc)
        finally:
            await pool.stop()
            await dead.stop()

    asyncio.run(inner())
    assert len(errors) == 6, errors
    assert {type(e).__name__ for e in errors} >= {"UndefinedTable", "PoolExhaustedError"}
    texts = ["".join(traceback.format_exception(e)) for e in errors]
    assert all(CANARY not in text for text in texts)
    exported = _everything(recorded)
    assert "db.client.connection.wait_time" in exported
    assert "SELECT" in exported
    assert CANARY not in exported
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "connect" in logged  # the dead pool's connection failures were logged...
    assert CANARY not in logged  # ...without the password
    assert CANARY not in repr(pool)
    assert CANARY not in repr(pool.stats())


def _sync_use(pool: Any) -> None:
    with pool.sync.connection() as conn:
        conn.execute("SELECT 1")


async def _checkout(pool: Any) -> None:
    async with pool.connection():
        pass


async def _eager(conninfo: str, recorded: Recorded) -> None:
    pool = build_pool("eager", config(conninfo=conninfo, min_size=1, timeout="300ms"))
    try:
        await pool.start(recorded.telemetry)
    finally:
        await pool.stop()


def test_psycopg_log_records_are_redacted(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A psycopg_pool log line quoting a conninfo has its password masked."""
    build_pool("main", config(conninfo=_with_password(postgres_dsn, "url")))
    caplog.set_level(logging.INFO)
    logging.getLogger("psycopg.pool").warning(
        "cannot use %s, password=%s", f"postgresql://u:{CANARY}@h/db", CANARY
    )
    logging.getLogger("psycopg").warning("bare %s in a message", CANARY)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")]
    assert messages == [
        "cannot use postgresql://u:****@h/db, password=****",
        "bare **** in a message",  # masked as the pool's known password, whatever the form
    ]
