"""The YAML reader: the 1.2 core schema, refused tags, aliases, duplicates and positions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from otelperf.config._yaml import (
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_EXPANDED_NODES,
    Position,
    parse_yaml,
)


def _value(text: str) -> Any:
    doc, problems = parse_yaml(f"key: {text}", "t.yaml", {})
    assert problems == []
    return doc.data["key"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # YAML 1.1 booleans are plain strings in 1.2.
        ("on", "on"),
        ("off", "off"),
        ("yes", "yes"),
        ("NO", "NO"),
        ("y", "y"),
        ("true", True),
        ("True", True),
        ("FALSE", False),
        ("tRUe", "tRUe"),
        # Integers: octal needs 0o, a leading zero is decimal, no underscores or sexagesimal.
        ("0o17", 15),
        ("017", 17),
        ("0x1F", 31),
        ("-12", -12),
        ("+12", 12),
        ("1_000", "1_000"),
        ("1:20", "1:20"),
        # Floats and the special values.
        ("1.5", 1.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("-.inf", -math.inf),
        (".Inf", math.inf),
        # Nulls.
        ("~", None),
        ("null", None),
        ("Null", None),
        ("", None),
        ("nil", "nil"),
        # 1.1 timestamps are strings in the core schema.
        ("2001-12-14", "2001-12-14"),
        ("12:30:00", "12:30:00"),
    ],
)
def test_core_schema_scalars(text: str, expected: Any) -> None:
    """Plain scalars resolve as the YAML 1.2 core schema says, not as PyYAML's 1.1 does."""
    value = _value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_nan_is_a_float() -> None:
    """`.nan` is a float NaN (it cannot be compared with ==)."""
    value = _value(".nan")
    assert isinstance(value, float)
    assert math.isnan(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("!!str 5", "5"), ("!!str true", "true"), ("!!float 1", 1.0), ("!!int '7'", 7), ("! 5", "5")],
)
def test_explicit_standard_tags(text: str, expected: Any) -> None:
    """The standard scalar tags are honoured; they decide the type."""
    value = _value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_explicit_tag_with_invalid_text() -> None:
    """`!!int abc` is reported with its position, not turned into something else."""
    _, problems = parse_yaml("a: 1\nkey: !!int abc\n", "t.yaml", {})
    assert [(p.line, p.column, p.path) for p in problems] == [(2, 6, "key")]
    assert problems[0].message == "'abc' is not a valid int"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("!!python/object/apply:os.system ['true']", "!!python/object/apply:os.system"),
        ("!!python/name:os.system", "!!python/name:os.system"),
        ("!!python/object:collections.OrderedDict {}", "!!python/object:collections.OrderedDict"),
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!timestamp 2001-12-14", "!!timestamp"),
        ("!!set {a, b}", "!!set"),
        ("!!omap [a: 1]", "!!omap"),
        ("!custom x", "!custom"),
        ("!<tag:example.com,2000:x> 1", "tag:example.com,2000:x"),
    ],
)
def test_non_core_tags_are_refused(text: str, shown: str) -> None:
    """Any tag outside str/int/float/bool/null/seq/map is refused, naming the tag."""
    _, problems = parse_yaml(f"key: {text}\n", "t.yaml", {})
    assert [(p.line, p.column, p.path) for p in problems] == [(1, 6, "key")]
    assert f"YAML tag {shown!r} is not allowed" in problems[0].message


def test_python_tags_never_run(tmp_path: Path) -> None:
    """A `!!python/object/apply` document is refused without calling anything."""
    marker = tmp_path / "pwned"
    text = (
        f'a: !!python/object/apply:os.system ["touch {marker}"]\n'
        f'b: !!python/object/apply:subprocess.check_call [["touch", "{marker}"]]\n'
        f'c: !!python/object/new:pathlib.Path ["{marker}"]\n'
    )
    _, problems = parse_yaml(text, "t.yaml", {})
    assert [p.path for p in problems] == ["a", "b", "c"]
    assert not marker.exists()


def test_merge_keys() -> None:
    """`<<` merges a mapping or a list of mappings; keys written locally win."""
    text = (
        "base: &base {ttl: 5m, stampede: lock}\n"
        "extra: &extra {spans: true}\n"
        "one: {<<: *base, ttl: 1m}\n"
        "two: {<<: [*base, *extra]}\n"
    )
    doc, problems = parse_yaml(text, "t.yaml", {})
    assert problems == []
    assert doc.data["one"] == {"ttl": "1m", "stampede": "lock"}
    assert doc.data["two"] == {"ttl": "5m", "stampede": "lock", "spans": True}


def test_merge_of_a_scalar_is_refused() -> None:
    """`<<: 5` is reported, not silently ignored."""
    _, problems = parse_yaml("a:\n  <<: 5\n", "t.yaml", {})
    assert [(p.line, p.path) for p in problems] == [(2, "a")]
    assert "'<<' merge key" in problems[0].message


def test_aliases_are_copied() -> None:
    """An alias stands for a copy of its anchored value."""
    doc, problems = parse_yaml("a: &x [1, 2]\nb: *x\n", "t.yaml", {})
    assert problems == []
    assert doc.data == {"a": [1, 2], "b": [1, 2]}


def test_duplicate_keys_name_both_lines() -> None:
    """A duplicate key is reported at the second one and names the line of the first."""
    _, problems = parse_yaml("a:\n  b: 1\n  c: 2\n  b: 3\n", "t.yaml", {})
    assert [(p.line, p.column, p.path) for p in problems] == [(4, 3, "a.b")]
    assert problems[0].message == "duplicate key 'b' (first defined on line 2)"


def test_keys_are_typed_but_floats_and_nulls_stay_text() -> None:
    """Integer and boolean keys keep their type; float and null keys keep their text."""
    doc, problems = parse_yaml("1: a\nfalse: b\n1.5: c\nnull: d\non: e\n", "t.yaml", {})
    assert problems == []
    assert doc.data == {1: "a", False: "b", "1.5": "c", "null": "d", "on": "e"}
    assert [type(k) for k in doc.data] == [int, bool, str, str, str]


def test_complex_keys_are_refused() -> None:
    """A list used as a mapping key is reported."""
    _, problems = parse_yaml("? [a, b]\n: c\n", "t.yaml", {})
    assert len(problems) == 1
    assert problems[0].message == "mapping keys must be plain scalars"
    assert (problems[0].line, problems[0].column) == (1, 3)


def test_positions_of_keys_and_values() -> None:
    """Every key path remembers where its key and its value start (1-based)."""
    text = "# comment\nservice:\n  name: shop\nlist:\n  - a\n  - {k: v}\n"
    doc, problems = parse_yaml(text, "t.yaml", {})
    assert problems == []
    assert doc.positions[("service",)] == Position(2, 1, 3, 3)
    assert doc.positions[("service", "name")] == Position(3, 3, 3, 9)
    assert doc.positions[("list", 1, "k")] == Position(6, 6, 6, 9)
    assert doc.positions[()] == Position(2, 1, 2, 1)


def test_comment_only_document_is_empty() -> None:
    """A document holding only comments parses to nothing, without problems."""
    doc, problems = parse_yaml("# nothing here\n\n", "t.yaml", {})
    assert (doc.data, problems) == (None, [])


def test_alias_bomb_is_refused_where_it_explodes() -> None:
    """A billion-laughs document is refused at the first node crossing the limit."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    _, problems = parse_yaml("\n".join(lines), "t.yaml", {})
    # e holds 10**5 strings: the first node above MAX_EXPANDED_NODES.
    assert MAX_EXPANDED_NODES < 10**5
    assert [(p.line, p.column, p.path) for p in problems] == [(5, 4, "e")]
    assert "alias bomb" in problems[0].message


def test_wide_but_legitimate_reuse_is_accepted() -> None:
    """Reusing an anchor many times is fine while the expansion stays bounded."""
    text = "base: &b {ttl: 5m}\n" + "".join(f"c{i}: *b\n" for i in range(500))
    doc, problems = parse_yaml(text, "t.yaml", {})
    assert problems == []
    assert doc.data["c499"] == {"ttl": "5m"}


def test_recursive_alias_is_refused() -> None:
    """An anchor holding an alias to itself is refused at the anchor's line."""
    _, problems = parse_yaml("ok: 1\nloop: &a\n  - 1\n  - *a\n", "t.yaml", {})
    assert [(p.line, p.column, p.path) for p in problems] == [(2, 7, "loop[1]")]
    assert "recursive YAML alias" in problems[0].message


def test_nesting_is_bounded() -> None:
    """Nesting deeper than MAX_DEPTH is refused with a position, not a RecursionError."""
    depth = MAX_DEPTH + 1
    _, problems = parse_yaml("[" * depth + "]" * depth, "t.yaml", {})
    assert len(problems) == 1
    assert (problems[0].line, problems[0].column) == (1, MAX_DEPTH + 1)
    assert f"nesting is deeper than {MAX_DEPTH} levels" in problems[0].message


def test_nesting_at_the_limit_is_accepted() -> None:
    """Exactly MAX_DEPTH levels parse."""
    doc, problems = parse_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH, "t.yaml", {})
    assert problems == []
    assert isinstance(doc.data, list)


def test_very_deep_document_does_not_overflow() -> None:
    """A hundred thousand open brackets give one problem, not a crash."""
    _, problems = parse_yaml("[" * 100_000, "t.yaml", {})
    assert len(problems) == 1
    assert "deeper than" in problems[0].message


def test_oversized_text_is_refused() -> None:
    """Text above MAX_CONFIG_BYTES is refused before any parsing."""
    _, problems = parse_yaml("a: " + "x" * MAX_CONFIG_BYTES, "t.yaml", {})
    assert len(problems) == 1
    assert "larger than 1024 KiB" in problems[0].message


def test_control_character_position() -> None:
    """A raw control character is reported at its line and column."""
    _, problems = parse_yaml("a: 1\nb: x\x07y\n", "t.yaml", {})
    assert [(p.line, p.column) for p in problems] == [(2, 5)]
    assert "U+0007 is not allowed" in problems[0].message


def test_escaped_control_character_is_fine() -> None:
    """The same character written as an escape in double quotes is accepted."""
    doc, problems = parse_yaml('b: "x\\ay"\n', "t.yaml", {})
    assert problems == []
    assert doc.data == {"b": "x\x07y"}


def test_syntax_errors_do_not_echo_the_source() -> None:
    """A YAML error message never quotes the offending line (it may hold a secret)."""
    _, problems = parse_yaml('url: "redis://u:CANARY-pw@h/0\n', "t.yaml", {})
    assert len(problems) == 1
    assert "CANARY" not in str(problems[0])


def test_multiple_documents_are_refused() -> None:
    """A stream of two documents is refused at the second one."""
    _, problems = parse_yaml("a: 1\n---\nb: 2\n", "t.yaml", {})
    assert [(p.line, p.column) for p in problems] == [(2, 1)]
    assert "expected a single document" in problems[0].message


def test_byte_order_mark_is_accepted() -> None:
    """A leading UTF-8 byte order mark (as some editors write) is ignored."""
    doc, problems = parse_yaml("\ufeffa: 1\n", "t.yaml", {})
    assert problems == []
    assert doc.data == {"a": 1}
