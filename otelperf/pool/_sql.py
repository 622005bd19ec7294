"""What a query's text says, for telemetry: operation name, summary, sanitized text.

One tokenizer serves all three, so a literal can never be mistaken for a keyword by
one and for text by the other. Nothing here does I/O; results are cached by query
text by the caller, so the parsing cost is paid once per distinct query.

Sanitizing replaces every literal (strings, escape/bit/hex strings, dollar-quoted
bodies, numbers) by ``?`` and drops comments (which can carry anything); identifiers,
keywords, placeholders (``%s``, ``%(name)s``, ``$1``) and punctuation stay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["QueryShape", "analyze", "sanitize"]

SUMMARY_MAX = 255
"""Longest ``db.query.summary``; a longer one is cut at a word boundary."""

# Order matters: the first alternative that matches at a position wins.
_TOKEN = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<dollar>\$(?P<tag>(?:[A-Za-z_][A-Za-z0-9_]*)?)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<estring>[Ee]'(?:[^'\\]|\\.|'')*(?:'|\Z))
    | (?P<string>(?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*(?:'|\Z))
    | (?P<quoted>(?:[Uu]&)?"(?:[^"]|"")*")
    | (?P<unterminated>".*)
    | (?P<param>\$[0-9]+|%\([^)]*\)s|%[sbt%])
    | (?P<number>(?:0[xXoObB][0-9A-Fa-f_]+
        |(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?)(?![A-Za-z_]))
    | (?P<word>[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<semi>;)
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# An unterminated quoted identifier swallows the rest of the text: mask it all.
_LITERALS = frozenset({"dollar", "estring", "string", "number", "unterminated"})
_SPACES = re.compile(r"\s+")
# What may precede an INSERT/UPDATE/DELETE/MERGE that starts a (sub)statement.
_OPERATION_CONTEXT = frozenset({"", "(", ")", ";", "EXPLAIN", "ANALYZE", "VERBOSE"})

# Statements whose first word is their operation name.
_OPERATIONS = frozenset(
    {
        "ALTER", "ANALYZE", "BEGIN", "CALL", "CHECKPOINT", "CLOSE", "CLUSTER", "COMMENT",
        "COMMIT", "COPY", "CREATE", "DEALLOCATE", "DECLARE", "DELETE", "DISCARD", "DO", "DROP",
        "END", "EXECUTE", "EXPLAIN", "FETCH", "GRANT", "IMPORT", "INSERT", "LISTEN", "LOAD",
        "LOCK", "MERGE", "MOVE", "NOTIFY", "PREPARE", "REASSIGN", "REFRESH", "REINDEX",
        "RELEASE", "RESET", "REVOKE", "ROLLBACK", "SAVEPOINT", "SECURITY", "SELECT", "SET",
        "SHOW", "START", "TABLE", "TRUNCATE", "UNLISTEN", "UPDATE", "VACUUM", "VALUES",
    }
)  # fmt: skip
# Operations that can appear inside another statement (CTEs, subqueries, INSERT ... SELECT).
_NESTED_OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
# Keywords after which the next name is a target (a table) in a summary.
_TARGET_AFTER = frozenset({"FROM", "JOIN", "INTO", "UPDATE", "TABLE", "COPY", "TRUNCATE"})
# Words that may sit between a target keyword and the target itself.
_TARGET_SKIP = frozenset({"ONLY", "LATERAL", "TABLE", "IF", "EXISTS", "NOT"})
# A '(' after one of these opens a subquery or a list, not a function call whose
# arguments may use FROM as a plain keyword (extract(epoch FROM ts), substring(s FROM 2)).
_NOT_CALLS = frozenset(
    {
        "AS", "FROM", "JOIN", "IN", "EXISTS", "ANY", "ALL", "SOME", "ON", "WHERE", "AND", "OR",
        "NOT", "SELECT", "VALUES", "LATERAL", "UNION", "INTERSECT", "EXCEPT", "USING", "INTO",
        "WITH", "RETURNING", "SET", "HAVING", "BY", "THEN", "ELSE", "WHEN", "COPY",
    }
)  # fmt: skip


@dataclass(frozen=True)
class QueryShape:
    """What telemetry needs from one query text."""

    operation: str | None
    """``db.operation.name``: the statement's operation, None when unknown or several."""
    summary: str | None
    """``db.query.summary``: operations and their targets in order, e.g. ``SELECT orders``."""
    sanitized: str
    """The text with every literal replaced by ``?`` and comments removed."""


def sanitize(text: str) -> str:
    """``text`` with every literal replaced by ``?`` and comments removed.

    >>> sanitize("SELECT * FROM users WHERE email = 'a@b.c' AND id > 42 -- why")
    'SELECT * FROM users WHERE email = ? AND id > ?'
    """
    return analyze(text).sanitized


def analyze(text: str) -> QueryShape:
    """Operation, summary and sanitized text of ``text``, in one pass.

    >>> analyze("insert into events (kind) values ($1)")
    QueryShape(operation='INSERT', summary='INSERT events', sanitized='insert into events (kind) values ($1)')
    """  # noqa: E501
    out: list[str] = []
    words: list[str] = []  # the summary: operations and targets in order
    operations: list[str] = []
    statements = 0  # statements started so far (a token seen after the last ';')
    in_statement = False
    first_word = ""  # of the current statement
    # One entry per open '(': True while it is a function call's argument list.
    calls: list[bool] = []
    previous = ""  # the last significant token, upper-cased when a word
    expect_target = False
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        token = match.group()
        if kind == "comment":
            if out and not out[-1].isspace():
                out.append(" ")
            continue
        out.append("?" if kind in _LITERALS else token)
        if kind == "space":
            continue
        if kind == "semi":
            in_statement = expect_target = False
            previous = ";"
            continue
        if not in_statement:
            in_statement = True
            statements += 1
            first_word = token.upper() if kind == "word" else ""
        if kind == "open":
            calls.append(_is_name(previous) and previous not in _NOT_CALLS)
            previous = "("
            expect_target = False
            continue
        if kind == "close":
            if calls:
                calls.pop()
            previous = ")"
            expect_target = False
            continue
        if kind == "quoted" or kind == "word":
            upper = token.upper() if kind == "word" else token
            if expect_target:
                if upper in _TARGET_SKIP:
                    previous = upper
                    continue
                expect_target = False
                if kind == "quoted" or upper not in _NOT_CALLS | _NESTED_OPERATIONS:
                    words.append(_qualified(text, match.end(), token))
                    previous = "NAME"
                    continue
            if kind == "word":
                if upper == "SELECT" and previous == "(" and calls:
                    calls[-1] = False  # ARRAY(SELECT ...): a subquery after all
                in_call = bool(calls) and calls[-1]
                if _is_operation(upper, previous, first_word, operations):
                    operations.append(upper)
                    words.append(upper)
                if (
                    not in_call
                    and upper in _TARGET_AFTER
                    and (upper != "TABLE" or previous == "TRUNCATE")
                    and (upper != "UPDATE" or previous in _OPERATION_CONTEXT)
                    # COPY t FROM STDIN: only a subquery's FROM names a table there
                    and (first_word != "COPY" or upper == "COPY" or calls)
                ):
                    expect_target = True
            previous = upper
            continue
        expect_target = False
        previous = token
    sanitized = _SPACES.sub(" ", "".join(out)).strip()
    if statements > 1:  # several statements: no single operation or summary describes them
        return QueryShape(None, None, sanitized)
    return QueryShape(operations[0] if operations else None, _summary(words), sanitized)


def _is_operation(upper: str, previous: str, first_word: str, operations: list[str]) -> bool:
    if upper == "SELECT":
        return True
    if upper in _NESTED_OPERATIONS:
        # Not "FOR UPDATE", "ON DELETE CASCADE", "DO UPDATE SET", "BEFORE INSERT OR UPDATE".
        return previous in _OPERATION_CONTEXT
    return upper == first_word and not operations and upper in _OPERATIONS


def _is_name(token: str) -> bool:
    return bool(token) and (token[0].isalpha() or token[0] == "_") and token != "NAME"


def _qualified(text: str, end: int, first: str) -> str:
    """``first`` extended by ``.name`` parts that follow it directly (schema.table)."""
    name = first
    while end < len(text) and text[end] == ".":
        match = _TOKEN.match(text, end + 1)
        if match is None or match.lastgroup not in ("word", "quoted"):
            break
        name += "." + match.group()
        end = match.end()
    return name


def _summary(words: list[str]) -> str | None:
    if not words:
        return None
    summary = " ".join(words)
    if len(summary) > SUMMARY_MAX:
        summary = summary[:SUMMARY_MAX].rsplit(" ", 1)[0]
    return summary
