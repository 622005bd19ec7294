"""Cache keys that are the same in every process and on every host.

A key is ``{namespace}:{cache}:v{version}:{part}``, where ``part`` is either a user
template (``"product:{pid}"``) formatted with the call's arguments, or
``{module}.{qualname}:{digest}``: a BLAKE2b digest of the call's arguments in a
canonical form. Python's ``hash()`` is salted per process, so it never appears here;
sets and dicts are sorted by their canonical form, so their iteration order (which
depends on that salt) does not leak into the key either.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import inspect
import string
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from otelperf._errors import OtelperfError

__all__ = ["CacheKeyError", "KeyMaker", "canonical", "prefix_of"]


class CacheKeyError(OtelperfError, TypeError):
    """An argument cannot be turned into a stable cache key, or a key template is wrong."""


CacheKeyError.__module__ = "otelperf"


def prefix_of(namespace: str, cache: str, version: str) -> str:
    """The part every key of one cache (and one version) starts with."""
    return f"{namespace}:{cache}:v{version}:"


def _text(value: str) -> str:
    # Length-prefixed, so no value can imitate the separators of its neighbours.
    return f"s{len(value)}:{value}"


def _seq(value: Iterable[Any]) -> str:
    return "[" + ",".join(canonical(v) for v in value) + "]"


def _mapping(value: Mapping[Any, Any]) -> str:
    items = sorted((canonical(k), canonical(v)) for k, v in value.items())
    return "{" + ",".join(f"{k}={v}" for k, v in items) + "}"


def _set(value: Iterable[Any]) -> str:
    return "<" + ",".join(sorted(canonical(v) for v in value)) + ">"


_EXACT: dict[type, Callable[[Any], str]] = {
    str: _text,
    int: lambda v: f"i{v}",
    bool: lambda v: "T" if v else "F",
    float: lambda v: f"f{v!r}",
    type(None): lambda v: "N",
    bytes: lambda v: f"b{v.hex()}",
    tuple: _seq,
    list: _seq,
    dict: _mapping,
    set: _set,
    frozenset: _set,
}


def canonical(value: Any) -> str:
    """A text form of ``value`` that is equal for equal values in any process.

    Handles None, bool, int, float, str, bytes, tuples, lists, dicts, sets, enums,
    dates and times, Decimal, UUID, dataclasses, pydantic models and any object with a
    ``__cache_key__()`` method; anything else raises :class:`CacheKeyError` (its
    ``repr`` would often hold a memory address, different in every process).
    """
    exact = _EXACT.get(type(value))
    if exact is not None:
        return exact(value)
    custom = getattr(type(value), "__cache_key__", None)
    if custom is not None:
        return f"k{type(value).__qualname__}({canonical(custom(value))})"
    if isinstance(value, enum.Enum):
        return f"e{type(value).__qualname__}.{value.name}"
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int):
        return f"i{int(value)}"
    if isinstance(value, float):
        return f"f{float(value)!r}"
    if isinstance(value, str):
        return _text(str(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"b{bytes(value).hex()}"
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return f"t{value.isoformat()}"
    if isinstance(value, datetime.timedelta):
        return f"d{value.total_seconds()!r}"
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return f"x{value}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return f"c{type(value).__qualname__}{_mapping(fields)}"
    dump = getattr(value, "model_dump", None)
    if dump is not None and callable(dump):
        return f"c{type(value).__qualname__}{canonical(dump(mode='json'))}"
    if isinstance(value, Mapping):
        return _mapping(value)
    if isinstance(value, (tuple, list)):
        return _seq(value)
    if isinstance(value, (set, frozenset)):
        return _set(value)
    raise CacheKeyError(
        f"cannot build a stable cache key from a value of type {type(value).__qualname__}; "
        "give the decorator key='...{name}...' (a template) or key=callable, list the "
        "argument in ignore=(...), or give the type a __cache_key__() method"
    )


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


_PLAIN = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class KeyMaker:
    """Builds the key (and tags) of one decorated function from its call arguments.

    ``template`` is a ``str.format`` template over the parameter names
    (``"product:{pid}"``, ``"user:{self.id}"``), or a callable taking the function's
    own arguments and returning the key part. With neither, the key part is the
    function's qualified name and a digest of its arguments; ``self`` and ``cls``
    (the first parameter of a method) and the names in ``ignore`` are left out.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        template: str | Callable[..., str] | None = None,
        tags: Iterable[str] = (),
        ignore: Iterable[str] = (),
    ) -> None:
        self.func = func
        self.qualname = f"{func.__module__}.{func.__qualname__}"
        self.signature = inspect.signature(func)
        params = list(self.signature.parameters.values())
        self.names = tuple(p.name for p in params)
        self.skip_first = bool(params) and params[0].name in ("self", "cls")
        self.ignore = frozenset(ignore)
        unknown = sorted(self.ignore - set(self.names))
        if unknown:
            raise CacheKeyError(
                f"ignore={unknown} names no parameter of {self.qualname}; "
                f"its parameters are: {', '.join(self.names) or '(none)'}"
            )
        # The fast path binds positional calls without inspect.Signature.bind (about
        # 2 µs): only for signatures made of plain positional-or-keyword parameters.
        self.simple = all(p.kind in _PLAIN for p in params)
        self.defaults = tuple(p.default for p in params)
        self.required = sum(1 for p in params if p.default is inspect.Parameter.empty)
        self.template = template
        self.tag_templates = tuple(tags)
        for text in ([template] if isinstance(template, str) else []) + list(self.tag_templates):
            self._check_template(text)
        self.static_tags = not any(_fields(t) for t in self.tag_templates)

    def _check_template(self, text: str) -> None:
        for name in _fields(text):
            root = name.split(".", 1)[0].split("[", 1)[0]
            if root not in self.names:
                raise CacheKeyError(
                    f"key or tag template {text!r} of {self.qualname} names {root!r}, which is "
                    f"not one of its parameters ({', '.join(self.names) or 'none'})"
                )

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments by parameter name, defaults applied."""
        if self.simple and not kwargs and self.required <= len(args) <= len(self.names):
            values = args + self.defaults[len(args) :]
            return dict(zip(self.names, values, strict=False))
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.qualname}(): {exc}") from None
        bound.apply_defaults()
        return bound.arguments

    def part(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The key part (what follows the cache prefix) of one call."""
        template = self.template
        if template is None:
            arguments = self.bind(args, kwargs)
            items = list(arguments.items())
            if self.skip_first:
                items = items[1:]
            if self.ignore:
                items = [(k, v) for k, v in items if k not in self.ignore]
            text = ",".join(f"{k}={canonical(v)}" for k, v in items)
            return f"{self.qualname}:{_digest(text)}"
        if isinstance(template, str):
            return template.format_map(self.bind(args, kwargs))
        part = template(*args, **kwargs)
        if not isinstance(part, str):
            raise CacheKeyError(
                f"the key callable of {self.qualname} returned {type(part).__qualname__}, not str"
            )
        return part

    def tags(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[str, ...]:
        """The tags of one call, templates formatted with its arguments."""
        if self.static_tags:
            return self.tag_templates
        arguments = self.bind(args, kwargs)
        return tuple(t.format_map(arguments) for t in self.tag_templates)


def _fields(text: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise CacheKeyError(f"invalid key or tag template {text!r}: {exc}") from None
    out = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise CacheKeyError(
                f"key or tag template {text!r} uses a positional field; "
                "name the parameter, e.g. {pid}"
            )
        out.append(name)
    return out
