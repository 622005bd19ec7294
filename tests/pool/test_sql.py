"""Query text analysis: operation names, summaries and sanitizing (no database needed)."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otelperf.pool._sql import SUMMARY_MAX, analyze, sanitize


@pytest.mark.parametrize(
    ("query", "operation", "summary"),
    [
        ("SELECT 1", "SELECT", "SELECT"),
        ("select * from orders where id = %s", "SELECT", "SELECT orders"),
        (
            "SELECT extract(epoch FROM ts), substring(s FROM 2) FROM events e "
            "JOIN users u ON u.id = e.uid",
            "SELECT",
            "SELECT events users",
        ),
        (
            "INSERT INTO public.events (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = 1",
            "INSERT",
            "INSERT public.events",
        ),
        ("UPDATE ONLY t SET a = 1 WHERE id = 2", "UPDATE", "UPDATE t"),
        (
            'DELETE FROM "My Table" WHERE a IN (SELECT id FROM s)',
            "DELETE",
            'DELETE "My Table" SELECT s',
        ),
        (
            "WITH x AS (DELETE FROM q RETURNING *) INSERT INTO y SELECT * FROM x",
            "DELETE",
            "DELETE q INSERT y SELECT x",
        ),
        ("COPY events (ts, kind) FROM STDIN", "COPY", "COPY events"),
        ("COPY (SELECT a FROM t) TO STDOUT", "COPY", "COPY SELECT t"),
        ("SELECT x FROM t FOR UPDATE", "SELECT", "SELECT t"),
        ("TRUNCATE TABLE a.b", "TRUNCATE", "TRUNCATE a.b"),
        ("  -- leading comment\n  BEGIN", "BEGIN", "BEGIN"),
        ("SET statement_timeout = 5000", "SET", "SET"),
        ("SELECT ARRAY(SELECT x FROM y)", "SELECT", "SELECT SELECT y"),
        ("CREATE TABLE foo (a int REFERENCES b ON DELETE CASCADE)", "CREATE", "CREATE"),
        ("EXPLAIN ANALYZE SELECT * FROM t", "EXPLAIN", "EXPLAIN SELECT t"),
        ("SELECT 1; SELECT 2", None, None),  # several statements: no single operation
        ("", None, None),
        ("frobnicate the database", None, None),  # not an operation: never a label
    ],
)
def test_operation_and_summary(query: str, operation: str | None, summary: str | None) -> None:
    """The operation is the statement's first one; the summary lists operations and targets."""
    shape = analyze(query)
    assert (shape.operation, shape.summary) == (operation, summary)


@pytest.mark.parametrize(
    ("query", "sanitized"),
    [
        ("SELECT * FROM t WHERE a = 'x' AND b = 42", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT 'it''s', E'it\\'s', -1.5e-3, .5, 0x1F", "SELECT ?, ?, -?, ?, ?"),
        ("SELECT B'1010', X'FF', N'n', U&'d\\0061t'", "SELECT ?, ?, ?, ?"),
        ("SELECT $$a 'b' c$$, $tag$ $$ x $tag$", "SELECT ?, ?"),
        ("SELECT col1, t2.x FROM t2 WHERE a = $1 AND b = %s AND c = %(name)s", None),
        ('SELECT "weird ""name"" 9" FROM t', None),  # identifiers stay
        ("SELECT 1 -- trailing 'comment'\n, /* block 'secret' */ 2", "SELECT ? , ?"),
        ("SELECT 'unterminated secret", "SELECT ?"),
        ("SELECT a\n  FROM t\n\tWHERE b = 1", "SELECT a FROM t WHERE b = ?"),
    ],
)
def test_sanitize_replaces_every_literal(query: str, sanitized: str | None) -> None:
    """Strings, escape/bit/hex strings, dollar quotes and numbers become '?'; comments go."""
    assert sanitize(query) == (sanitized if sanitized is not None else query)


def test_summary_is_bounded() -> None:
    """A huge query's summary is cut below 256 characters at a word boundary."""
    query = " UNION ALL ".join(f"SELECT a FROM table_{i:04d}" for i in range(200))
    summary = analyze(query).summary
    assert summary is not None
    assert len(summary) <= SUMMARY_MAX
    assert summary.startswith("SELECT table_0000 SELECT table_0001")
    assert not summary.endswith(" ")


_SECRET = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="'\\$"),
    min_size=6,
    max_size=30,
).map(lambda s: "Z" + s + "Q")


@settings(max_examples=200, deadline=None)
@given(secret=_SECRET, number=st.integers(min_value=10**6, max_value=10**12))
def test_no_literal_survives_sanitizing(secret: str, number: int) -> None:
    """Whatever a string literal or number holds, the sanitized text never contains it."""
    escaped = secret.replace("'", "''")
    for query in (
        f"SELECT * FROM t WHERE a = '{escaped}' AND n = {number}",
        f"INSERT INTO t VALUES (E'{escaped}', $q${secret}$q$, -{number}.5)",
        f"UPDATE t SET a = '{escaped}' -- {secret}\nWHERE id = {number}",
    ):
        out = sanitize(query)
        assert secret not in out
        assert str(number) not in out


def test_docstring_examples_hold() -> None:
    """The examples in the pool modules' docstrings run and are true."""
    from otelperf.pool import PoolExhaustedError, _sql

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    tests = finder.find(_sql) + finder.find(
        PoolExhaustedError, globs={"PoolExhaustedError": PoolExhaustedError}
    )
    for test in tests:
        runner.run(test)
    assert runner.tries >= 3
    assert runner.failures == 0
