"""Turn a YAML file (or a mapping) into a validated :class:`Config`, or one ConfigError."""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from otelperf._errors import ConfigError, ConfigProblem
from otelperf._redact import redact_text
from otelperf.config._schema import SECRET_KEYS, Config
from otelperf.config._yaml import MAX_CONFIG_BYTES, Document, Path, parse_yaml

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
    path = FsPath(name)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                [ConfigProblem(name, 0, 0, "", f"config is larger than {MAX_CONFIG_BYTES // 1024} KiB; refused")]
            )
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(name, 0, 0, "", "config file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigProblem(name, 0, 0, "", "is a directory, not a config file")]) from None
    except PermissionError:
        raise ConfigError([ConfigProblem(name, 0, 0, "", "permission denied")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigProblem(name, 0, 0, "", f"not UTF-8 text (byte {exc.start})")]
        ) from None


def validate(doc: Document, name: str) -> Config:
    """Validate parsed data against the schema, mapping every error to its source position."""
    data = doc.data
    if not isinstance(data, dict):
        found = "an empty document" if data is None else f"a {_yaml_type(data)}"
        raise ConfigError(
            [
                ConfigProblem(
                    name,
                    1 if name != "<mapping>" else 0,
                    1 if name != "<mapping>" else 0,
                    "",
                    f"the config must be a mapping with at least 'version' and 'service'; found {found}",
                )
            ]
        )
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
    for batcher_name, batcher in (batchers.items() if isinstance(batchers, dict) else ()):
        sink = batcher.get("sink") if isinstance(batcher, dict) else None
        postgres = sink.get("postgres") if isinstance(sink, dict) else None
        pool = postgres.get("pool") if isinstance(postgres, dict) else None
        if isinstance(pool, str) and pool not in declared:
            path: Path = ("batchers", batcher_name, "sink", "postgres", "pool")
            valid = ", ".join(declared) or "none are declared under 'pools'"
            problems.append(
                _at(doc, name, path, f"unknown pool {pool!r}; declared pools: {valid}", key=False)
            )
    return problems


def _at(doc: Document, name: str, path: Path, message: str, *, key: bool) -> ConfigProblem:
    pos = None
    probe = path
    while probe and pos is None:
        pos = doc.positions.get(probe)
        if pos is None:
            probe = probe[:-1]
            key = True
    line = col = 0
    if pos is not None:
        line, col = (pos.line, pos.column) if key else (pos.value_line, pos.value_column)
    return ConfigProblem(name, line, col, _dotted(path), message)


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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
    if any(isinstance(p, str) and p in SECRET_KEYS for p in path):
        return "<redacted>"
    if isinstance(value, (dict, list)):
        return f"a {_yaml_type(value)}"
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


def _walk(loc: tuple[int | str, ...]) -> tuple[Path, Any]:
    """Follow a pydantic error location; return the document path and the type reached."""
    path: list[str | int] = []
    tp: Any = Config
    for part in loc:
        tp = _unwrap(tp)
        variants = _variants(tp)
        if variants and part in variants:
            tp = variants[str(part)]  # the tag pydantic inserts is not in the document
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
    return tuple(path), _unwrap(tp)


def _parent_model(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    _, tp = _walk(loc[:-1])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _problem(err: Any, doc: Document, name: str) -> ConfigProblem:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    kind: str = err["type"]
    path, tp = _walk(loc)
    value = err.get("input")
    ctx = err.get("ctx") or {}
    on_key = False

    if kind == "extra_forbidden":
        on_key = True
        model = _parent_model(loc)
        valid = sorted(model.model_fields) if model else []
        key = str(path[-1])
        guess = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        if guess:
            message = f"unknown key {key!r}; did you mean {guess[0]!r}? valid keys: {', '.join(valid)}"
        else:
            message = f"unknown key {key!r}; valid keys: {', '.join(valid)}"
    elif kind == "missing":
        on_key = True
        message = f"required key {path[-1]!r} is missing"
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            message += f" (a mapping with {', '.join(_required(tp))})"
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
    elif kind in ("duration", "size", "ratio", "url", "import_path", "name"):
        message = err["msg"]
    elif kind in ("sizes", "signing", "stampede", "sink", "hook", "endpoint", "exclusive", "exporter"):
        message = err["msg"]
        on_key = True
    else:
        message = f"{_lower_first(err['msg'])}; found {_describe(path, value)}"

    unset = doc.unset_vars.get(path)
    if unset:
        names = ", ".join(f"${{{n}}}" for n in unset)
        message += f" ({names} is not set and has no default; write ${{{unset[0]}:-default}} or set it)"
    return _at(doc, name, path, redact_text(message), key=on_key)


def _required(model: type[BaseModel]) -> list[str]:
    return [k for k, f in model.model_fields.items() if f.is_required()] or ["optional keys only"]


def _describe(path: Path, value: object) -> str:
    shown = _shown(path, value)
    kind = _yaml_type(value)
    if shown.startswith("a ") or shown == "<redacted>":
        return shown
    return f"{shown} ({kind})"


def _literal_choices(tp: Any, ctx: Mapping[str, Any]) -> str:
    if get_origin(tp) is Literal:
        return ", ".join(str(a) for a in get_args(tp))
    return str(ctx.get("expected", "")).replace("'", "")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
