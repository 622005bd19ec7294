"""Safe YAML reading with OpenTelemetry-style environment substitution and source positions.

The document is composed into nodes by PyYAML's safe composer and turned into
Python values here, not by PyYAML's constructors, so that:

* only plain scalars, lists and mappings exist (every ``!!python/...`` or custom
  tag is refused, nothing is ever instantiated from the document);
* scalars follow the YAML 1.2 core schema, as the OpenTelemetry configuration
  data model asks (``on``/``yes``/``NO`` stay strings, ``0o17`` is octal);
* ``${VAR}`` references are substituted in scalar values (never keys) before
  their type is resolved, and a substituted value is never parsed as YAML
  structure;
* duplicate keys, recursive aliases and alias bombs are reported;
* every key path keeps the line and column it came from, for error messages.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from otelperf._errors import ConfigProblem

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "MAX_EXPANDED_NODES",
    "Document",
    "Path",
    "SubstitutionError",
    "dotted",
    "parse_yaml",
    "substitute",
]

MAX_CONFIG_BYTES = 1024 * 1024
"""Largest config file accepted; real configs are a few KiB."""

MAX_EXPANDED_NODES = 20_000
"""Most nodes a document may hold once aliases are expanded (a billion-laughs guard)."""

MAX_DEPTH = 64
"""Deepest nesting of lists and mappings accepted; real configs use fewer than ten levels."""

Path = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE = f"{_TAG}seq", f"{_TAG}map", f"{_TAG}merge"


class _CoreResolver(yaml.resolver.Resolver):
    """Implicit typing of the YAML 1.2 core schema (PyYAML implements 1.1)."""

    # A fresh table, so the 1.1 resolvers PyYAML registers on its base class never apply.
    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 (PyYAML's own attribute)


_CoreResolver.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreResolver.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), [*"-+0123456789"]
)
_CoreResolver.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    [*"-+.0123456789"],
)
_CoreResolver.add_implicit_resolver(_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), [*"~nN", ""])
_CoreResolver.add_implicit_resolver(_MERGE, re.compile(r"^<<$"), ["<"])


class _Composer(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    _CoreResolver,
):
    """PyYAML's composer (no constructor: nodes only), remembering explicit scalar tags."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _CoreResolver.__init__(self)
        self.explicit_tags: set[int] = set()
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # Bounded here, so that no later recursion (ours, pydantic's) can overflow the stack.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nesting is deeper than {MAX_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        node = super().compose_scalar_node(anchor)
        if event.tag == "!":
            # YAML 1.2: the non-specific tag makes a scalar a string (PyYAML resolves it).
            node.tag = _STR
        if event.tag is not None:
            self.explicit_tags.add(id(node))
        return node


class SubstitutionError(ValueError):
    """A ``${...}`` reference that is not valid substitution syntax."""


_REF = re.compile(r"\$\{([^}]+)\}")
_REF_BODY = re.compile(r"(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?")


def substitute(
    text: str, environ: Mapping[str, str] | None = None, unset: list[str] | None = None
) -> str:
    """Substitute ``${VAR}``, ``${env:VAR}``, ``${VAR:-default}`` and ``$$`` in one scalar.

    The rules are the OpenTelemetry configuration data model's: ``$$`` escapes are
    found left to right first and their ``$`` is never part of a reference; a
    variable that is unset or empty takes the default, else becomes ``""``; the
    substituted text is never substituted again. Names of unset variables without
    a default are appended to ``unset``. Raises :class:`SubstitutionError` for a
    reference such as ``${VAR:?x}`` or ``${1X}``.
    """
    env = os.environ if environ is None else environ

    def one(match: re.Match[str]) -> str:
        body = _REF_BODY.fullmatch(match.group(1))
        if body is None:
            raise SubstitutionError(
                f"invalid substitution reference {match.group(0)!r}; "
                "expected ${NAME}, ${env:NAME} or ${NAME:-default}"
            )
        name, default = body.group(1), body.group(2)
        value = env.get(name, "")
        if value:
            return value
        if default is not None:
            return default
        if unset is not None:
            unset.append(name)
        return ""

    if "$" not in text:
        return text
    return "$".join(_REF.sub(one, part) for part in text.split("$$"))


@dataclass(frozen=True)
class Position:
    """Where a key (and its value) stand in the source, 1-based."""

    line: int
    column: int
    value_line: int
    value_column: int


@dataclass
class Document:
    """A parsed config: its data plus where every key path came from."""

    data: Any
    positions: dict[Path, Position] = field(default_factory=dict)
    unset_vars: dict[Path, list[str]] = field(default_factory=dict)
    """Key paths whose value referenced an unset variable without a default."""


class _Builder:
    def __init__(
        self, source: str, explicit_tags: set[int], environ: Mapping[str, str] | None
    ) -> None:
        self.source = source
        self.explicit_tags = explicit_tags
        self.environ = environ
        self.problems: list[ConfigProblem] = []
        self.doc = Document(data=None)

    def problem(self, node: Node, path: Path, message: str) -> None:
        mark = node.start_mark
        self.problems.append(
            ConfigProblem(self.source, mark.line + 1, mark.column + 1, dotted(path), message)
        )

    def build(self, node: Node, path: Path) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                self.problem(node, path, _bad_tag(node.tag))
                return None
            items = []
            for index, item in enumerate(node.value):
                self.record((*path, index), item, item)
                items.append(self.build(item, (*path, index)))
            return items
        if isinstance(node, MappingNode):
            if node.tag != _MAP:
                self.problem(node, path, _bad_tag(node.tag))
                return None
            return self.mapping(node, path)
        self.problem(node, path, f"unsupported YAML node {type(node).__name__}")
        return None

    def record(self, path: Path, key: Node, value: Node) -> None:
        km, vm = key.start_mark, value.start_mark
        self.doc.positions.setdefault(
            path, Position(km.line + 1, km.column + 1, vm.line + 1, vm.column + 1)
        )

    def mapping(self, node: MappingNode, path: Path) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                self.problem(key_node, path, "mapping keys must be plain scalars")
                continue
            # Keys are never substituted (the spec), but they are typed like values.
            key = self.typed(key_node, key_node.value, path)
            if isinstance(key, float) or key is None:
                key = key_node.value
            if key in result:
                first = self.doc.positions.get((*path, key))
                where = f" (first defined on line {first.line})" if first else ""
                self.problem(key_node, (*path, key), f"duplicate key {key!r}{where}")
                continue
            self.record((*path, key), key_node, value_node)
            result[key] = self.build(value_node, (*path, key))
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source_node in sources:
                if not isinstance(source_node, MappingNode):
                    self.problem(
                        merge, path, "a '<<' merge key needs a mapping or list of mappings"
                    )
                    continue
                for merged_key, merged_value in self.mapping(source_node, path).items():
                    result.setdefault(merged_key, merged_value)
        return result

    def scalar(self, node: ScalarNode, path: Path) -> Any:
        value: str = node.value
        tag = node.tag
        if "$" in value:
            unset: list[str] = []
            try:
                value = substitute(value, self.environ, unset)
            except SubstitutionError as exc:
                self.problem(node, path, str(exc))
                return None
            if unset:
                self.doc.unset_vars[path] = unset
            if node.style is None and id(node) not in self.explicit_tags:
                # Types are resolved after substitution (the spec), from the text alone.
                resolver = _CoreResolver()
                tag = resolver.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
        return self.typed(node, value, path, tag)

    def typed(self, node: ScalarNode, value: str, path: Path, tag: str | None = None) -> Any:
        tag = tag or node.tag
        try:
            if tag == _STR:
                return value
            if tag == _NULL:
                if value not in ("", "~", "null", "Null", "NULL"):
                    raise ValueError
                return None
            if tag == _BOOL:
                if value.lower() not in ("true", "false"):
                    raise ValueError
                return value.lower() == "true"
            if tag == _INT:
                return _core_int(value)
            if tag == _FLOAT:
                return _core_float(value)
        except ValueError:
            self.problem(node, path, f"{value!r} is not a valid {tag.rsplit(':', 1)[-1]}")
            return None
        self.problem(node, path, _bad_tag(tag))
        return None


def _core_int(value: str) -> int:
    if value.startswith("0o"):
        return int(value[2:], 8)
    if value.startswith("0x"):
        return int(value[2:], 16)
    return int(value, 10)


def _core_float(value: str) -> float:
    lowered = value.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(value)


def _bad_tag(tag: str) -> str:
    shown = tag.replace(_TAG, "!!")
    return (
        f"YAML tag {shown!r} is not allowed; a config holds only strings, numbers, "
        "booleans, null, lists and mappings"
    )


def dotted(path: Path) -> str:
    """``caches.products.ttl`` / ``profiling.hooks[0].engine``: a key path as users write it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _children(node: Node, path: Path) -> Iterator[tuple[Node, Path]]:
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            yield item, (*path, index)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key, path
            yield value, (*path, key.value) if isinstance(key, ScalarNode) else path


class _ExpansionError(Exception):
    def __init__(self, node: Node, path: Path, message: str) -> None:
        super().__init__(message)
        self.node, self.path, self.message = node, path, message


def _expanded_size(root: Node, source: str) -> ConfigProblem | None:
    """Count nodes as if aliases were copied; refuse recursion and alias bombs.

    The problem points at the anchored node that contains itself, or at the
    first node whose expansion crosses the limit: that is where the bomb is.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node, path: Path) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _ExpansionError(
                node,
                path,
                "recursive YAML alias: an anchored node contains an alias to itself",
            )
        active.add(key)
        total = 1 + sum(size(child, child_path) for child, child_path in _children(node, path))
        active.discard(key)
        sizes[key] = total
        if total > MAX_EXPANDED_NODES:
            raise _ExpansionError(
                node,
                path,
                f"this node expands to more than {MAX_EXPANDED_NODES} nodes through YAML "
                "aliases (an alias bomb?); write the repeated parts out",
            )
        return total

    try:
        size(root, ())
    except _ExpansionError as refused:
        mark = refused.node.start_mark
        return ConfigProblem(
            source, mark.line + 1, mark.column + 1, dotted(refused.path), refused.message
        )
    return None


# PyYAML's wording, completed with the usual cause.
_HINTS = (
    ("expected <block end>", "check the indentation of this line"),
    (
        "mapping values are not allowed here",
        "check the indentation, or quote a value that contains ': '",
    ),
    ("found character '\\t'", "indent with spaces: YAML does not allow tabs"),
    ("quoted scalar", "is a closing quote missing?"),
    (
        "flow sequence",
        "a '[' is not closed, or a value holding ',', '[', ']', '{' or '}' needs quotes",
    ),
    (
        "flow mapping",
        "a '{' is not closed, or a value holding ',', '[', ']', '{' or '}' needs quotes",
    ),
)


def _yaml_problem(exc: yaml.YAMLError, text: str, source: str) -> ConfigProblem:
    # The snippet PyYAML prints would echo the source line, which may hold a secret.
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        message = exc.problem or "invalid YAML"
        context = exc.context or ""
        if context.startswith("while "):
            # "while parsing a flow sequence": say where that started, it is often the cause.
            if exc.context_mark is not None and exc.context_mark.line != mark.line:
                context += f" started on line {exc.context_mark.line + 1}"
            message = f"{context}: {message}"
        elif context:
            message = f"{context}, {message}"
        hints = [hint for needle, hint in _HINTS if needle in message]
        if hints:
            message += f" ({hints[0]})"
        return ConfigProblem(source, mark.line + 1, mark.column + 1, "", f"invalid YAML: {message}")
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.position, int):
        # Positions count characters of the text: turn them into a line and column.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return ConfigProblem(
            source,
            line,
            column,
            "",
            f"invalid YAML: character U+{exc.character:04X} is not allowed "
            '(write control characters as escapes in a double-quoted string, e.g. "\\t")',
        )
    return ConfigProblem(source, 0, 0, "", f"invalid YAML: {type(exc).__name__}")


def parse_yaml(
    text: str, source: str, environ: Mapping[str, str] | None = None
) -> tuple[Document, list[ConfigProblem]]:
    """Parse one YAML document; return it with every problem found (empty when none)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        return Document(None), [
            ConfigProblem(
                source, 0, 0, "", f"config is larger than {MAX_CONFIG_BYTES // 1024} KiB; refused"
            )
        ]
    too_deep = ConfigProblem(source, 0, 0, "", f"YAML nesting is deeper than {MAX_DEPTH} levels")
    try:
        composer = _Composer(text)
        try:
            root = composer.get_single_node()
        finally:
            composer.dispose()
    except yaml.YAMLError as exc:
        return Document(None), [_yaml_problem(exc, text, source)]
    except RecursionError:
        return Document(None), [too_deep]
    if root is None:
        return Document(None), []
    try:
        bomb = _expanded_size(root, source)
        if bomb is not None:
            return Document(None), [bomb]
        builder = _Builder(source, composer.explicit_tags, environ)
        mark = root.start_mark
        builder.doc.positions[()] = Position(
            mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 1
        )
        builder.doc.data = builder.build(root, ())
    except RecursionError:
        return Document(None), [too_deep]
    return builder.doc, builder.problems
