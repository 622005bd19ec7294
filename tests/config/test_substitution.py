"""Environment substitution, checked against the OpenTelemetry configuration data model.

The table is the one in the specification (specification/configuration/data-model.md,
"Environment variable substitution"), with its environment, row by row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from otelperf import Config, ConfigError, load_config
from otelperf.config import substitute
from otelperf.config._yaml import parse_yaml

SPEC_ENV = {
    "STRING_VALUE": "value",
    "BOOL_VALUE": "true",
    "INT_VALUE": "1",
    "FLOAT_VALUE": "1.1",
    "HEX_VALUE": "0xdeadbeef",
    "INVALID_MAP_VALUE": "value\nkey:value",
    "DO_NOT_REPLACE_ME": "Never use this value",
    "REPLACE_ME": "${DO_NOT_REPLACE_ME}",
    "VALUE_WITH_ESCAPE": "value$$",
}

# (YAML input, the value of `key` once parsed)
SPEC_TABLE: list[tuple[str, Any]] = [
    ("key: ${STRING_VALUE}", "value"),
    ("key: ${BOOL_VALUE}", True),
    ("key: ${INT_VALUE}", 1),
    ("key: ${FLOAT_VALUE}", 1.1),
    ("key: ${HEX_VALUE}", 3735928559),
    ('key: "${STRING_VALUE}"', "value"),
    ('key: "${BOOL_VALUE}"', "true"),
    ('key: "${INT_VALUE}"', "1"),
    ('key: "${FLOAT_VALUE}"', "1.1"),
    ('key: "${HEX_VALUE}"', "0xdeadbeef"),
    ("key: ${env:STRING_VALUE}", "value"),
    ("key: ${INVALID_MAP_VALUE}", "value\nkey:value"),
    ("key: foo ${STRING_VALUE} ${FLOAT_VALUE}", "foo value 1.1"),
    ("key: ${UNDEFINED_KEY}", None),
    ("key: ${UNDEFINED_KEY:-fallback}", "fallback"),
    ("key: ${REPLACE_ME}", "${DO_NOT_REPLACE_ME}"),
    ("key: ${UNDEFINED_KEY:-${STRING_VALUE}}", "${STRING_VALUE}"),
    ("key: $${STRING_VALUE}", "${STRING_VALUE}"),
    ("key: $$${STRING_VALUE}", "$value"),
    ("key: $$$${STRING_VALUE}", "$${STRING_VALUE}"),
    ("key: $${STRING_VALUE:-fallback}", "${STRING_VALUE:-fallback}"),
    ("key: $${STRING_VALUE:-${STRING_VALUE}}", "${STRING_VALUE:-value}"),
    ("key: ${UNDEFINED_KEY:-$${UNDEFINED_KEY}}", "${UNDEFINED_KEY:-${UNDEFINED_KEY}}"),
    ("key: ${VALUE_WITH_ESCAPE}", "value$$"),
    ("key: a $$ b", "a $ b"),
    ("key: a $ b", "a $ b"),
]


@pytest.mark.parametrize(("text", "expected"), SPEC_TABLE, ids=[row[0] for row in SPEC_TABLE])
def test_spec_table(text: str, expected: Any) -> None:
    """Each row of the specification's table parses to the value and type it lists."""
    doc, problems = parse_yaml(text, "t.yaml", SPEC_ENV)
    assert problems == []
    assert doc.data == {"key": expected}
    # 1 == True == 1.0 in Python: the type is part of what the table specifies.
    assert type(doc.data["key"]) is type(expected)


def test_spec_table_keys_are_not_substituted() -> None:
    """A reference written as a mapping key stays literally in the key (the spec's key row)."""
    doc, problems = parse_yaml("${STRING_VALUE}: value", "t.yaml", SPEC_ENV)
    assert problems == []
    assert doc.data == {"${STRING_VALUE}": "value"}


def test_spec_table_invalid_reference_is_an_error() -> None:
    """`${STRING_VALUE:?error}` is an invalid reference: a problem, and no partial value."""
    doc, problems = parse_yaml("key: ${STRING_VALUE:?error}", "t.yaml", SPEC_ENV)
    assert len(problems) == 1
    assert (problems[0].line, problems[0].column, problems[0].path) == (1, 6, "key")
    assert "invalid substitution reference '${STRING_VALUE:?error}'" in problems[0].message
    assert doc.data == {"key": None}


@pytest.mark.parametrize("reference", ["${1API_KEY}", "${API_$KEY}", "${ }", "${env:}"])
def test_spec_invalid_names_are_errors(reference: str) -> None:
    """References the spec's grammar calls invalid (a name starting with a digit...) fail."""
    _, problems = parse_yaml(f'key: "{reference}"', "t.yaml", SPEC_ENV)
    assert [p.path for p in problems] == ["key"]
    assert "invalid substitution reference" in problems[0].message


def test_spec_pseudocode_example() -> None:
    """The spec's worked example `$${FOO} ${BAR} $${BAZ}` resolves to `${FOO} b ${BAZ}`."""
    assert substitute("$${FOO} ${BAR} $${BAZ}", {"FOO": "a", "BAR": "b", "BAZ": "c"}) == (
        "${FOO} b ${BAZ}"
    )


def test_empty_variable_takes_the_default() -> None:
    """A variable set to the empty string takes the default, as an unset one does (the spec)."""
    assert substitute("${EMPTY:-dflt}", {"EMPTY": ""}) == "dflt"
    assert substitute("${EMPTY}", {"EMPTY": ""}) == ""


def test_unset_variables_are_reported() -> None:
    """Names of unset variables without a default are collected, the defaulted ones are not."""
    unset: list[str] = []
    assert substitute("${A}-${B:-b}-${C}", {}, unset) == "-b-"
    assert unset == ["A", "C"]


def test_substitution_never_injects_structure() -> None:
    """A value holding YAML flow syntax stays a string: it cannot add keys or lists."""
    env = {"MAP": "{a: 1, b: [2]}", "LIST": "[1, 2]", "DOC": "x\n---\ny: 1"}
    doc, problems = parse_yaml("m: ${MAP}\nl: ${LIST}\nd: ${DOC}", "t.yaml", env)
    assert problems == []
    assert doc.data == {"m": "{a: 1, b: [2]}", "l": "[1, 2]", "d": "x\n---\ny: 1"}


def test_explicit_tag_wins_over_substituted_text() -> None:
    """`!!str ${INT_VALUE}` stays a string; the type comes from the tag, not the text."""
    doc, problems = parse_yaml("key: !!str ${INT_VALUE}", "t.yaml", SPEC_ENV)
    assert problems == []
    assert doc.data == {"key": "1"}


def test_single_quoted_values_are_substituted_as_strings() -> None:
    """Single quotes, like double quotes, substitute and force a string."""
    doc, problems = parse_yaml("key: '${INT_VALUE}'", "t.yaml", SPEC_ENV)
    assert problems == []
    assert doc.data == {"key": "1"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "otelperf.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_substituted_values_reach_typed_fields(tmp_path: Path) -> None:
    """Substituted text is typed by the field it lands in: int, bool, duration, ratio, size."""
    path = _write(
        tmp_path,
        "version: ${VERSION}\n"
        "service: {name: '${SERVICE:-shop}', environment: '${DEPLOY_ENV:-dev}'}\n"
        "telemetry:\n"
        "  traces: {sample_ratio: '${RATIO}'}\n"
        "  logs:\n"
        "    export: ${EXPORT_LOGS}\n"
        "pools:\n"
        "  main:\n"
        "    conninfo: ${DATABASE_URL}\n"
        "    max_size: ${POOL_MAX}\n"
        "    timeout: ${POOL_TIMEOUT}\n"
        "profiling: {max_total_size: '${PROFILE_BUDGET}'}\n",
    )
    config = load_config(
        path,
        environ={
            "VERSION": "1",
            "RATIO": "25%",
            "EXPORT_LOGS": "true",
            "DATABASE_URL": "postgresql://app@db:5432/app",
            "POOL_MAX": "20",
            "POOL_TIMEOUT": "2500ms",
            "PROFILE_BUDGET": "5MiB",
        },
    )
    assert isinstance(config, Config)
    assert config.version == 1
    assert config.service.name == "shop"
    assert config.service.environment == "dev"
    assert config.telemetry.traces.sample_ratio == pytest.approx(0.25)
    assert config.telemetry.logs.export is True
    pool = config.pools["main"]
    assert pool.conninfo == "postgresql://app@db:5432/app"
    assert pool.max_size == 20
    assert type(pool.max_size) is int
    assert pool.timeout == pytest.approx(2.5)
    assert config.profiling.max_total_size == 5 * 1024 * 1024


def test_substitution_uses_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `environ`, references read the process environment."""
    monkeypatch.setenv("OTELPERF_TEST_SERVICE", "from-env")
    path = _write(tmp_path, "version: 1\nservice: {name: '${OTELPERF_TEST_SERVICE}'}\n")
    assert load_config(path).service.name == "from-env"


def test_injected_map_stays_a_string_in_a_config(tmp_path: Path) -> None:
    """A variable holding `value\\nkey:value` becomes the name, and adds no key to the config."""
    path = _write(tmp_path, "version: 1\nservice:\n  name: ${INVALID_MAP_VALUE}\n")
    config = load_config(path, environ=SPEC_ENV)
    assert config.service.name == "value\nkey:value"


def test_injected_structure_is_refused_where_a_mapping_is_expected(tmp_path: Path) -> None:
    """Flow-mapping text from the environment is a string, so a mapping field refuses it."""
    path = _write(tmp_path, "version: 1\nservice:\n  name: a\n  attributes: ${ATTRS}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"ATTRS": "{team: checkout}"})
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.path) == (4, 15, "service.attributes")
    assert "expected a mapping; found '{team: checkout}' (string)" in problem.message


def test_unset_variable_is_named_in_the_error(tmp_path: Path) -> None:
    """A required value left empty by an unset variable names the variable and the fix."""
    path = _write(
        tmp_path, "version: 1\nservice: {name: a}\npools:\n  main:\n    conninfo: ${DB}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.path) == (5, 15, "pools.main.conninfo")
    assert "found null" in problem.message
    assert "${DB} is not set and has no default; write ${DB:-default} or set it" in (
        problem.message
    )
