"""Render the config reference (``docs/config.md``) from the schema, so the two never drift."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from otelperf.config._schema import Config
from otelperf.config._units import parse_duration, parse_ratio, parse_size

__all__ = ["render_markdown"]

_UNIT_NAMES = {parse_duration: "duration", parse_size: "size", parse_ratio: "ratio"}

_HEADER = """# Config reference

<!-- Generated from otelperf/config/_schema.py by `python -m otelperf._docgen`;
     tests/test_docs.py fails when this file and the schema disagree. -->

One YAML file describes the whole service. Durations are written with a unit
(`250ms`, `2s`, `30m`, `1h30m`, `28d`; a bare number other than `0` is refused),
sizes in bytes or with a unit (`512KiB`, `1MB`), ratios as a percentage (`99.9%`)
or a number from 0 to 1. Any value may reference the environment as the
OpenTelemetry declarative configuration does: `${VAR}`, `${env:VAR}`,
`${VAR:-default}`, and `$$` for a literal `$`; keys are never substituted and a
substituted value is never parsed as YAML structure. Scalars follow the YAML 1.2
core schema (`on`, `yes` and `no` are strings). Unknown keys are errors.
Keys marked *secret* are masked by `otelperf check` and never appear in errors.

`otelperf schema` prints the same schema as JSON Schema for editors.
"""


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)) and len(args) == 1:
            return args[0], True
    return tp, False


def _type_name(tp: Any, info: FieldInfo | None = None) -> str:
    if info is not None:
        for meta in info.metadata:
            func = getattr(meta, "func", None)
            if func in _UNIT_NAMES:
                return _UNIT_NAMES[func]
    tp, optional = _unwrap_optional(tp)
    origin = get_origin(tp)
    if origin is typing.Annotated:
        args = get_args(tp)
        for meta in args[1:]:
            func = getattr(meta, "func", None)
            if func in _UNIT_NAMES:
                name = _UNIT_NAMES[func]
                break
        else:
            name = _type_name(args[0])
    elif origin is Literal:
        name = " \\| ".join(f"`{a}`" for a in get_args(tp))
    elif origin is list:
        name = f"list of {_type_name(get_args(tp)[0])}"
    elif origin is dict:
        name = f"mapping of name to {_type_name(get_args(tp)[1])}"
    elif origin in (typing.Union, types.UnionType):
        if all(isinstance(a, type) and issubclass(a, BaseModel) for a in get_args(tp)):
            name = "mapping, by `backend`"
        else:
            name = " or ".join(_type_name(a) for a in get_args(tp))
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        name = "mapping"
    elif isinstance(tp, type):
        name = {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
            tp, tp.__name__
        )
    else:
        name = str(tp)
    return f"{name} (optional)" if optional and "optional" not in name else name


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "see below"
        return f"`{value!r}`" if value not in ({}, []) else "empty"
    if info.default is PydanticUndefined or info.default is None:
        return "unset"
    return f"`{info.default}`"


def _models_in(tp: Any) -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    tp, _ = _unwrap_optional(tp)
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return _models_in(get_args(tp)[0])
    if origin in (list, dict, typing.Union, types.UnionType):
        for arg in get_args(tp):
            out.extend(_models_in(arg))
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        out.append(tp)
    return out


def _section(
    path: str, model: type[BaseModel], lines: list[str], level: int, variant: str = ""
) -> None:
    from otelperf.config._schema import SECRET_KEYS

    lines.append(f"{'#' * level} `{path}`{variant}")
    lines.append("")
    doc = (model.__doc__ or "").strip().splitlines()
    if doc:
        lines.append(doc[0])
        lines.append("")
    lines.append("| key | type | default | description |")
    lines.append("|---|---|---|---|")
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        description = (info.description or "").replace("\n", " ").replace("|", "\\|")
        if name in SECRET_KEYS:
            description = f"*secret.* {description}".strip()
        lines.append(
            f"| `{name}` | {_type_name(info.annotation, info)} | {_default(info)} | {description} |"
        )
        for sub in _models_in(info.annotation):
            if name == "backend":
                continue
            suffix = ""
            origin = get_origin(_unwrap_optional(info.annotation)[0])
            if origin is dict:
                suffix = ".NAME"
            elif origin is list:
                suffix = "[]"
            nested.append((f"{path}.{name}{suffix}", sub))
    lines.append("")
    for label, sub in nested:
        _section(label, sub, lines, min(level + 1, 4), variant)


def render_markdown() -> str:
    """The whole config reference as Markdown."""
    lines = [_HEADER]
    lines.append("## Top level")
    lines.append("")
    lines.append("| key | type | default | description |")
    lines.append("|---|---|---|---|")
    for name, info in Config.model_fields.items():
        description = (info.description or "").replace("|", "\\|")
        lines.append(
            f"| `{name}` | {_type_name(info.annotation, info)} | {_default(info)} | {description} |"
        )
    lines.append("")
    for name, info in Config.model_fields.items():
        origin = get_origin(_unwrap_optional(info.annotation)[0])
        for sub in _models_in(info.annotation):
            label = f"{name}.NAME" if origin is dict else name
            variant = ""
            if "backend" in sub.model_fields:
                tag = get_args(sub.model_fields["backend"].annotation)[0]
                variant = f" with `backend: {tag}`"
            _section(label, sub, lines, 2, variant)
    return "\n".join(lines).rstrip() + "\n"
