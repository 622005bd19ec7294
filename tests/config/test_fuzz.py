"""Random documents: load_config returns a Config or raises ConfigError, nothing else."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otelperf import Config, ConfigError, ConfigProblem, load_config

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
ENVIRON = {"X": "1", "DATABASE_URL": "postgresql://app:pw@db/app", "EMPTY": ""}

VALID = """\
version: 1
service: {name: shop-api, version: 1.4.2, environment: "${DEPLOY_ENV:-dev}"}
telemetry:
  exporter: otlp
  otlp: {endpoint: "http://localhost:4317", protocol: grpc, headers: {authorization: "Bearer t"}}
  traces: {sample_ratio: 1.0}
  metrics: {interval: 15s, histograms: explicit}
http:
  exclude: ["/healthz", "/readyz", "/metrics"]
  capture_headers: {request: [user-agent]}
  slo: {latency: {threshold: 250ms, target: 99%}, availability: {target: 99.9%}, window: 28d}
caches:
  products: {backend: redis, url: "redis://localhost:6379/0", ttl: 30m, stampede: lock}
  sessions: {backend: memory, max_entries: 10000, ttl: 5m}
pools:
  main: {conninfo: "${DATABASE_URL}", min_size: 2, max_size: 20, timeout: 5s}
batchers:
  events:
    max_size: 500
    max_wait: 2s
    max_queue: 100000
    on_full: block
    sink: {postgres: {pool: main, table: events, columns: [ts, kind, payload]}}
    retry: {attempts: 5, backoff: 100ms, max_backoff: 10s}
    dead_letter: {path: ./events.dlq.jsonl}
profiling:
  output_dir: ./profiles
  hooks:
    - {route: "/reports/*", sample_rate: 0.05, min_duration: 500ms}
  on_demand: {token: "a-long-enough-secret-token"}
runtime: {event_loop_lag: true, process: true, disk_paths: ["/"]}
health: {liveness: /healthz, readiness: /readyz}
"""
VALID_DATA: dict[str, Any] = yaml.safe_load(VALID.replace("${DEPLOY_ENV:-dev}", "dev"))
VALID_DATA["pools"]["main"]["conninfo"] = ENVIRON["DATABASE_URL"]


def _schema_keys() -> list[str]:
    """Every property name in the JSON schema, so random documents hit real fields."""
    keys: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            keys.update(node.get("properties", {}))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(Config.model_json_schema())
    return sorted(keys)


KEYS = _schema_keys()
WORDS = [
    "250ms", "5s", "0", "99.9%", "150%", "1KiB", "-1", "redis://u:p@localhost/0", "memory",
    "redis", "tiered", "pickle", "lock", "otlp", "prometheus", "main", "${X}", "${Y:-2}",
    "${Z:?e}", "$$", "/reports/*", "app.mod:fn", "", " ", "[key]",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3), st.booleans())
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=10,
)
sections = st.dictionaries(st.sampled_from(KEYS), documents, max_size=3)


def _check(outcome: Config | ConfigError, source: str) -> None:
    if isinstance(outcome, Config):
        return
    assert outcome.problems, "a ConfigError always lists its problems"
    for problem in outcome.problems:
        assert isinstance(problem, ConfigProblem)
        assert problem.source == source
        assert problem.line >= 0
        assert problem.column >= 0
        assert problem.message
        assert str(problem)


def _load_file(path: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        outcome: Config | ConfigError = load_config(path, environ=ENVIRON)
    except ConfigError as exc:
        outcome = exc
    _check(outcome, str(path))


def _load_mapping(data: dict[Any, Any]) -> None:
    try:
        outcome: Config | ConfigError = load_config(data, environ=ENVIRON)
    except ConfigError as exc:
        outcome = exc
    _check(outcome, "<mapping>")


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file rewritten by every example (function-scoped fixtures and @given do not mix)."""
    return tmp_path_factory.mktemp("fuzz") / "otelperf.yaml"


def test_valid_base_loads(fuzz_file: Path) -> None:
    """The document the mutations start from is valid, so mutations test what they change."""
    fuzz_file.write_text(VALID, encoding="utf-8")
    assert isinstance(load_config(fuzz_file, environ=ENVIRON), Config)
    assert isinstance(load_config(VALID_DATA), Config)


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text(fuzz_file: Path, text: str) -> None:
    """Arbitrary text never raises anything but ConfigError."""
    _load_file(fuzz_file, text)


@FUZZ
@given(text=st.text(alphabet="ab1: -[]{}&*!|>'\"#%@`,?\n\t\r$~.\x00\ufeff", max_size=200))
def test_random_yaml_punctuation(fuzz_file: Path, text: str) -> None:
    """Text dense in YAML syntax (anchors, tags, flows, tabs, NULs) gives ConfigError at worst."""
    _load_file(fuzz_file, text)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_random_bytes(fuzz_file: Path, raw: bytes) -> None:
    """Arbitrary bytes, most of them not UTF-8, give ConfigError at worst."""
    _load_file(fuzz_file, raw)


@FUZZ
@given(top=documents, extra=sections)
def test_random_structures(fuzz_file: Path, top: Any, extra: dict[str, Any]) -> None:
    """Random structures, dumped with yaml.safe_dump or passed as a mapping, never escape."""
    # `top` is anything YAML can represent; `extra` puts random sections, named after
    # real schema keys, next to a valid header, which reaches deep into validation.
    _load_file(fuzz_file, yaml.safe_dump(top, allow_unicode=True))
    data = {"version": 1, "service": {"name": "shop"}, **extra}
    _load_file(fuzz_file, yaml.safe_dump(data, allow_unicode=True))
    _load_mapping(data)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


_VALID_PATHS = _paths(VALID_DATA)[1:]


@FUZZ
@given(
    path=st.sampled_from(_VALID_PATHS),
    action=st.sampled_from(["replace", "delete", "add"]),
    value=documents,
    key=keys,
)
def test_structural_mutations_of_a_valid_config(
    path: tuple[Any, ...], action: str, value: Any, key: Any
) -> None:
    """Replacing, deleting or adding one value anywhere in a valid config never escapes."""
    data = copy.deepcopy(VALID_DATA)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][key] = value
    elif isinstance(parent[last], list):
        parent[last].append(value)
    else:
        parent[last] = [parent[last], value]
    _load_mapping(data)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["insert", "delete", "replace", "duplicate-line", "swap-lines"]),
            st.integers(min_value=0, max_value=len(VALID)),
            st.text(alphabet=" :-{}[],'\"\n\t#&*!$%0123456789abcxyz", min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_text_mutations_of_a_valid_config(
    fuzz_file: Path, edits: list[tuple[str, int, str]]
) -> None:
    """Characters inserted, deleted or replaced, and lines moved, in a valid file never escape."""
    text = VALID
    for action, position, chunk in edits:
        at = min(position, len(text))
        if action == "insert":
            text = text[:at] + chunk + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + len(chunk) :]
        elif action == "replace":
            text = text[:at] + chunk + text[at + len(chunk) :]
        else:
            lines = text.split("\n")
            index = text.count("\n", 0, at)
            if action == "duplicate-line":
                lines.insert(index, lines[index])
            else:
                other = (index + len(chunk)) % len(lines)
                lines[index], lines[other] = lines[other], lines[index]
            text = "\n".join(lines)
    _load_file(fuzz_file, text)
