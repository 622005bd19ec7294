"""Stable cache keys: canonical argument forms, templates, methods, refusals."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from otelperf.cache import CacheKeyError, canonical
from otelperf.cache._keys import KeyMaker


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opaque:
    pass


class Keyed:
    def __init__(self, ident: int) -> None:
        self.ident = ident

    def __cache_key__(self) -> Any:
        return self.ident


def search(query: str, filters: dict[str, Any], tags: frozenset[str], page: int = 1) -> None:
    """A function keyed by digest in the cross-process test."""


SAMPLE_ARGS = ("tea", {"b": [1, 2.5, None], "a": {"x", "y", "z"}}, frozenset({"p", "q", "r"}))


def _key_of_sample() -> str:
    return KeyMaker(search).part(SAMPLE_ARGS, {})


def test_key_is_the_same_in_processes_with_different_hash_seeds() -> None:
    """Keys of dict/set/frozenset arguments do not depend on the process's hash salt."""
    code = "from tests.cache.test_keys import _key_of_sample; print(_key_of_sample())"
    keys = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
            timeout=60,
        )  # fmt: skip
        keys.add(out.stdout.strip())
    assert keys == {_key_of_sample()}
    assert _key_of_sample().startswith("tests.cache.test_keys.search:")


def test_equal_calls_share_a_key_and_different_calls_do_not() -> None:
    """Positional, keyword and defaulted spellings of one call map to one key."""
    maker = KeyMaker(search)
    a = maker.part(("tea", {}, frozenset()), {})
    assert a == maker.part(("tea",), {"filters": {}, "tags": frozenset(), "page": 1})
    assert a == maker.part(("tea", {}, frozenset(), 1), {})
    assert a != maker.part(("tea", {}, frozenset(), 2), {})
    assert a != maker.part(("coffee", {}, frozenset()), {})


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (1, "1"),
        (1, 1.0),
        (True, 1),
        (None, "None"),
        (("a", "b"), ("a,b",)),
        ({"a": 1}, {"a": "1"}),
        (b"ab", "ab"),
        (["a", ["b"]], [["a"], "b"]),
    ],
)
def test_values_that_differ_get_different_canonical_forms(left: Any, right: Any) -> None:
    """Canonical forms keep types and nesting apart, so unequal arguments never collide."""
    assert canonical(left) != canonical(right)


def test_rich_types_have_canonical_forms() -> None:
    """Enums, dates, decimals, UUIDs, dataclasses and __cache_key__ objects are keyed by value."""
    ident = uuid.UUID(int=7)
    when = datetime.datetime(2024, 1, 2, 3, 4, 5)
    values = [Color.RED, when, decimal.Decimal("1.10"), ident, Point(1, 2), Keyed(9)]
    again = [Color.RED, when, decimal.Decimal("1.10"), ident, Point(1, 2), Keyed(9)]
    assert [canonical(v) for v in values] == [canonical(v) for v in again]
    assert canonical(Point(1, 2)) != canonical(Point(2, 1))
    assert canonical(Keyed(1)) != canonical(Keyed(2))


def test_an_object_without_stable_form_is_refused_with_advice() -> None:
    """An arbitrary object (whose repr holds an address) is refused, naming the fixes."""
    with pytest.raises(CacheKeyError, match=r"Opaque.*key=.*ignore=.*__cache_key__"):
        canonical(Opaque())


def test_methods_leave_self_out_and_ignore_drops_arguments() -> None:
    """Two instances share a method's entry; ignored parameters do not change the key."""

    class Repo:
        def find(self, pid: int, session: object = None) -> None: ...

    maker = KeyMaker(Repo.find, ignore=("session",))
    assert maker.part((Repo(), 3, Opaque()), {}) == maker.part((Repo(), 3, Opaque()), {})
    assert maker.part((Repo(), 3), {}) != maker.part((Repo(), 4), {})
    assert ".Repo.find:" in maker.part((Repo(), 3), {})


def test_templates_format_arguments_and_attributes() -> None:
    """A template names parameters, attributes of them, and works with defaults."""

    class User:
        id = 17

    def load(user: User, kind: str = "full") -> None: ...

    maker = KeyMaker(load, template="user:{user.id}:{kind}", tags=("user:{user.id}", "users"))
    assert maker.part((User(),), {}) == "user:17:full"
    assert maker.tags((User(),), {"kind": "x"}) == ("user:17", "users")


def test_a_template_naming_an_unknown_parameter_is_refused_at_decoration() -> None:
    """A typo in a template fails when the decorator is applied, naming the parameters."""

    def load(pid: int) -> None: ...

    with pytest.raises(CacheKeyError, match=r"'product:\{id\}'.*'id'.*\(pid\)"):
        KeyMaker(load, template="product:{id}")
    with pytest.raises(CacheKeyError, match="positional field"):
        KeyMaker(load, template="product:{}")
    with pytest.raises(CacheKeyError, match=r"ignore=\['nope'\]"):
        KeyMaker(load, ignore=("nope",))


def test_a_key_callable_gets_the_arguments_and_must_return_str() -> None:
    """key=callable receives the call's arguments; a non-str result is refused."""

    def load(pid: int) -> None: ...

    assert KeyMaker(load, template=lambda pid: f"p{pid}").part((5,), {}) == "p5"
    with pytest.raises(CacheKeyError, match="returned int"):
        KeyMaker(load, template=lambda pid: pid).part((5,), {})


def test_bad_calls_raise_the_functions_own_type_error() -> None:
    """A call that does not fit the signature raises TypeError naming the function."""
    with pytest.raises(TypeError, match="search"):
        KeyMaker(search).part((), {"nope": 1})


def test_canonical_form_is_json_free_of_surprises() -> None:
    """Strings holding separators cannot imitate a neighbouring argument."""
    maker = KeyMaker(search)
    a = maker.part(("a", {"k": "v,page=i2"}, frozenset()), {})
    b = maker.part(("a", {"k": "v"}, frozenset()), {"page": 2})
    assert a != b
    assert json.dumps(canonical("x")) == json.dumps("s1:x")
