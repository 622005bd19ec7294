"""Turn a YAML file (or a mapping) into a validated :class:`Config`, or one ConfigError."""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from otelperf._errors import ConfigError, ConfigProblem
from otelperf._redact import redact_text
from otelperf.config._schema import SECRET_KEYS, Config
from otelperf.config._yaml import MAX_CONFIG_BYTES, Document, Path, dotted, parse_yaml

__all__ = ["ConfigSource", "load_config"]

ConfigSource = str | os.PathLike[str] | Mapping[str, Any]


def load_config(source: ConfigSource, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and validate a config; raise :class:`ConfigError` listing every problem.

    ``source`` is a path to a YAML file or an already-parsed mapping (used as
    given: no substitution). ``environ`` replaces ``os.environ`` for ``${VAR}``.
    """
    if isinstance(source, Mapping):
        doc, name = Document(dict(source)), "<mapping>"
    else:
        name = os.fspath(source)
        text = _read(name)
        doc, problems = parse_yaml(text, name, environ)
        if problems:
            raise ConfigError(problems)
    return validate(doc, name)


def _read(name: str) -> str:
    # Read one byte past the limit rather than trusting stat(): /dev/zero, pipes and
    # files growing while read have no honest size.
    try:
        with open(name, "rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise _unreadable(name, "config file not found") from None
    except IsADirectoryError:
        raise _unreadable(name, "is a directory, not a config file") from None
    except PermissionError:
        raise _unreadable(name, "permission denied") from None
    except OSError as exc:
        raise _unreadable(name, f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    except ValueError:  # a NUL byte in the path
        raise _unreadable(name, "cannot be read: invalid path") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _unreadable(name, f"config is larger than {MAX_CONFIG_BYTES // 1024} KiB; refused")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line_start = before.rfind(b"\n") + 1
        column = len(before[line_start:].decode("utf-8")) + 1
        problem = ConfigProblem(
            name,
            before.count(b"\n") + 1,
            column,
            "",
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded; "
            "save the file as UTF-8",
        )
        raise ConfigError([problem]) from None


def _unreadable(name: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(name, 0, 0, "", message)])


def validate(doc: Document, name: str) -> Config:
    """Validate parsed data against the schema, mapping every error to its source position."""
    data = doc.data
    if not isinstance(data, dict):
        found = "an empty document" if data is None else f"a {_yaml_type(data)}"
        message = (
            f"the config must be a mapping with at least 'version' and 'service'; found {found}"
        )
        raise ConfigError([_at(doc, name, (), message, key=True)])
    problems = _cross_check(data, doc, name)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += [_problem(err, doc, name) for err in exc.errors(include_url=False)]
    if problems:
        raise ConfigError(_unique(problems))
    return config


def _unique(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    seen: set[ConfigProblem] = set()
    out = []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return sorted(out, key=lambda p: (p.line, p.column))


def _cross_check(data: dict[Any, Any], doc: Document, name: str) -> list[ConfigProblem]:
    """Checks between sections, on the raw data so they join the schema's problems."""
    problems = []
    pools = data.get("pools")
    declared = sorted(str(k) for k in pools) if isinstance(pools, dict) else []
    batchers = data.get("batchers")
    for batcher_name, batcher in batchers.items() if isinstance(batchers, dict) else ():
        sink = batcher.get("sink") if isinstance(batcher, dict) else None
        postgres = sink.get("postgres") if isinstance(sink, dict) else None
        pool = postgres.get("pool") if isinstance(postgres, dict) else None
        if isinstance(pool, str) and pool not in declared:
            path: Path = ("batchers", batcher_name, "sink", "postgres", "pool")
            valid = ", ".join(declared) or "none are declared under 'pools'"
            guess = difflib.get_close_matches(pool, declared, n=1, cutoff=0.6)
            hint = f" did you mean {guess[0]!r}?" if guess else ""
            message = f"unknown pool {pool!r};{hint} declared pools: {valid}"
            problems.append(_at(doc, name, path, message, key=False))
    return problems


def _at(doc: Document, name: str, path: Path, message: str, *, key: bool) -> ConfigProblem:
    """The problem at ``path``, or at its closest ancestor written in the file."""
    probe = path
    pos = doc.positions.get(probe)
    while pos is None and probe:
        probe = probe[:-1]
        key = True
        pos = doc.positions.get(probe)
    line = col = 0
    if pos is not None:
        line, col = (pos.line, pos.column) if key else (pos.value_line, pos.value_column)
    return ConfigProblem(name, line, col, dotted(path), message)


def _yaml_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _shown(path: Path, value: object) -> str:
    if isinstance(value, (dict, list)):
        return f"a {_yaml_type(value)}"
    if value == "":
        return "an empty string"
    if any(isinstance(p, str) and p in SECRET_KEYS for p in path):
        return "<redacted>"
    text = redact_text(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


# --- mapping pydantic's locations back to the document -------------------------


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is typing.Annotated:
            tp = get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
            else:
                return tp
        else:
            return tp


def _variants(tp: Any) -> dict[str, type[BaseModel]]:
    """Models of a discriminated union, by their ``backend`` tag."""
    out = {}
    for arg in get_args(tp):
        if isinstance(arg, type) and issubclass(arg, BaseModel) and "backend" in arg.model_fields:
            for tag in get_args(arg.model_fields["backend"].annotation):
                out[tag] = arg
    return out


def _walk(loc: tuple[int | str, ...]) -> tuple[Path, Any, Any]:
    """Follow a pydantic error location.

    Return the document path, the type reached, and the plain union (such as
    ``str | int | float | bool``) whose member pydantic named last in ``loc``, if the
    location ends on one: pydantic reports one error per member, each under the
    member's name, which is not a key of the document.
    """
    path: list[str | int] = []
    tp: Any = Config
    union: Any = None
    for part in loc:
        tp = _unwrap(tp)
        union = None
        variants = _variants(tp)
        if variants and part in variants:
            tp = variants[str(part)]  # the tag pydantic inserts is not in the document
            continue
        if get_origin(tp) in (typing.Union, types.UnionType):
            union, tp = tp, None  # the member's name, not a key
            continue
        path.append(part)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            tp = field.annotation if field is not None else None
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        else:
            tp = None
    return tuple(path), _unwrap(tp), union


def _parent_model(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    _, tp, _ = _walk(loc[:-1])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _problem(err: Any, doc: Document, name: str) -> ConfigProblem:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    kind: str = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    on_key = False
    is_key = bool(loc) and loc[-1] == "[key]"  # a dict key of the wrong type, not a value
    path, tp, union = _walk(loc[:-1] if is_key else loc)

    if is_key:
        on_key = True
        message = f"names here must be strings; found {_describe((), value)}"
    elif union is not None:
        message = f"expected {_union_choices(union)}; found {_describe(path, value)}"
    elif kind == "extra_forbidden":
        on_key = True
        model = _parent_model(loc)
        valid = sorted(model.model_fields) if model else []
        key = str(path[-1])
        guess = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        if guess:
            message = (
                f"unknown key {key!r}; did you mean {guess[0]!r}? valid keys: {', '.join(valid)}"
            )
        else:
            message = f"unknown key {key!r}; valid keys: {', '.join(valid)}"
    elif kind == "missing":
        on_key = True
        message = f"required key {path[-1]!r} is missing"
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            required = [k for k, f in tp.model_fields.items() if f.is_required()]
            if required:
                message += f" (a mapping with {', '.join(required)})"
            else:
                message += f" (a mapping; valid keys: {', '.join(sorted(tp.model_fields))})"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        variants = sorted(_variants(tp) if tp is not None else ctx.get("expected_tags", ""))
        expected = ", ".join(variants) or str(ctx.get("expected_tags", ""))
        if kind == "union_tag_not_found":
            on_key = True
            message = f"missing 'backend'; expected one of: {expected}"
        else:
            path = (*path, "backend")
            message = f"unknown backend {ctx.get('tag')!r}; expected one of: {expected}"
    elif kind == "literal_error":
        message = f"found {_shown(path, value)}; expected one of: {_literal_choices(tp, ctx)}"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        message = f"expected a mapping; found {_describe(path, value)}"
    elif kind == "list_type":
        message = f"expected a list; found {_describe(path, value)}"
    elif kind in ("duration", "size", "ratio", "url", "import_path"):
        message = err["msg"]
    elif kind == "name":
        # Raised for the whole mapping: point at the offending name itself.
        message = err["msg"]
        path = (*path, ctx.get("name", ""))
        on_key = True
    elif kind in _FOCUS:
        # Raised by a model validator for the whole section: point at the key that
        # decides, when the file writes it (else at the section).
        message = err["msg"]
        written = [(*path, *sub) for sub in _FOCUS[kind] if (*path, *sub) in doc.positions]
        if written:
            path = written[0]
        else:
            on_key = True
    else:
        message = f"{_lower_first(err['msg'])}; found {_describe(path, value)}"

    unset = doc.unset_vars.get(path)
    if unset:
        names = ", ".join(f"${{{n}}}" for n in unset)
        message += (
            f" ({names} is not set and has no default; write ${{{unset[0]}:-default}} or set it)"
        )
    return _at(doc, name, path, redact_text(message), key=on_key)


_FOCUS: dict[str, tuple[tuple[str, ...], ...]] = {
    "sizes": (("max_queue",), ("max_size",), ("min_size",)),
    "signing": (("serializer",),),
    "stampede": (("stampede",),),
    "exclusive": (("otel_config_file",),),
    "exporter": (("traces", "exporter"),),
    "endpoint": (("endpoint", "enabled"),),
    "sink": (),
    "hook": (),
}
"""Model-level error kinds, with the keys (relative to the model) each is about."""

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _union_choices(union: Any) -> str:
    names = [
        _TYPE_NAMES.get(arg, getattr(arg, "__name__", str(arg)))
        for arg in get_args(union)
        if arg is not type(None)
    ]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _describe(path: Path, value: object) -> str:
    if value is None:
        return "null"
    shown = _shown(path, value)
    kind = _yaml_type(value)
    if shown.startswith(("a ", "an ")):
        return shown
    if shown == "<redacted>":
        return f"a {kind} (not shown: secret)"
    return f"{shown} ({kind})"


def _literal_choices(tp: Any, ctx: Mapping[str, Any]) -> str:
    if get_origin(tp) is Literal:
        return ", ".join(str(a) for a in get_args(tp))
    return str(ctx.get("expected", "")).replace("'", "")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
