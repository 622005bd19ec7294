"""Malformed configs: each gives one problem naming the line, column, key path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelperf import ConfigError, ConfigProblem, load_config
from otelperf.config._yaml import MAX_CONFIG_BYTES

HEAD = "version: 1\nservice: {name: shop}\n"


def _problems(path: Path) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return info.value.problems


def _lines(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def _bomb() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    return HEAD + _lines(*lines)


# id, YAML text, line, column (None: not checked), key path, a fragment of the message.
# Columns are 1-based; a value error points at the value, a missing or unknown key at the key.
# fmt: off
CASES = [
    # --- wrong types --------------------------------------------------------------
    (
        "wrong-type-int",
        HEAD + _lines("pools:", "  main:", "    conninfo: postgresql://db", "    max_size: lots"),
        6, 15, "pools.main.max_size",
        "input should be a valid integer, unable to parse string as an integer; found 'lots'",
    ),
    (
        "wrong-type-bool",
        HEAD + _lines("runtime:", "  process: maybe"),
        4, 12, "runtime.process", "input should be a valid boolean",
    ),
    (
        "wrong-type-list",
        HEAD + _lines("http:", "  exclude: /healthz"),
        4, 12, "http.exclude", "expected a list; found '/healthz' (string)",
    ),
    (
        "wrong-type-mapping",
        HEAD + _lines("telemetry: otlp"),
        3, 12, "telemetry", "expected a mapping; found 'otlp' (string)",
    ),
    (
        "wrong-type-string",
        _lines("version: 1", "service:", "  name: [shop]"),
        3, 9, "service.name", "input should be a valid string; found a list",
    ),
    (
        "wrong-type-union",
        _lines("version: 1", "service:", "  name: shop", "  attributes: {team: [a, b]}"),
        4, 22, "service.attributes.team",
        "expected a string, an integer, a number or a boolean; found a list",
    ),
    (
        "out-of-range-port",
        HEAD + _lines("telemetry:", "  prometheus: {port: 70000}"),
        4, 22, "telemetry.prometheus.port", "less than or equal to 65535; found 70000",
    ),
    # --- unknown keys ---------------------------------------------------------------
    (
        "unknown-key-typo",
        _lines("version: 1", "service:", "  name: shop", "  verion: 1.2.0"),
        4, 3, "service.verion", "unknown key 'verion'; did you mean 'version'?",
    ),
    (
        "unknown-section-typo",
        HEAD + _lines("cachez: {}"),
        3, 1, "cachez", "unknown key 'cachez'; did you mean 'caches'?",
    ),
    (
        "unknown-key-no-guess",
        HEAD + _lines("caches:", "  c:", "    backend: memory", "    colour: blue"),
        6, 5, "caches.c.colour",
        "unknown key 'colour'; valid keys: backend, compression, max_entries,",
    ),
    # --- units ---------------------------------------------------------------------
    (
        "bad-duration-unit",
        HEAD + _lines("caches:", "  c: {backend: memory, ttl: 30x}"),
        4, 29, "caches.c.ttl", "invalid duration '30x'; expected a number with a unit",
    ),
    (
        "bare-duration",
        HEAD + _lines("telemetry:", "  otlp:", "    timeout: 5"),
        5, 14, "telemetry.otlp.timeout",
        "found the bare number 5; a duration needs a unit: write e.g. '5s' or '5ms'",
    ),
    (
        "bad-size-unit",
        HEAD + _lines("profiling:", "  max_total_size: 12 parsecs"),
        4, 19, "profiling.max_total_size", "invalid size '12 parsecs'; expected a whole number",
    ),
    (
        "negative-size",
        HEAD + _lines("http:", "  compression: {min_size: -1}"),
        4, 27, "http.compression.min_size", "invalid size -1",
    ),
    (
        "bad-ratio-percent",
        HEAD + _lines("telemetry:", "  traces: {sample_ratio: 150%}"),
        4, 26, "telemetry.traces.sample_ratio",
        "invalid ratio '150%'; expected a percentage from 0% to 100%",
    ),
    (
        "bad-ratio-number",
        HEAD + _lines("http:", "  slo:", "    availability: {target: 1.5}"),
        5, 28, "http.slo.availability.target", "invalid ratio 1.5",
    ),
    # --- environment ---------------------------------------------------------------
    (
        "missing-env-var",
        HEAD + _lines("pools:", "  main:", '    conninfo: "${DATABASE_URL}"'),
        5, 15, "pools.main.conninfo",
        "at least 1 character; found an empty string (${DATABASE_URL} is not set and has no "
        "default; write ${DATABASE_URL:-default} or set it)",
    ),
    (
        "invalid-reference",
        HEAD + _lines("pools:", "  main:", "    conninfo: ${DATABASE_URL:?required}"),
        5, 15, "pools.main.conninfo",
        "invalid substitution reference '${DATABASE_URL:?required}'",
    ),
    (
        "unquoted-reference-in-flow-mapping",
        HEAD + _lines("pools:", "  main: {conninfo: ${DATABASE_URL}}"),
        4, 21, "", "a value holding ',', '[', ']', '{' or '}' needs quotes",
    ),
    # --- unsafe or hostile YAML ------------------------------------------------------
    (
        "python-tag",
        _lines("version: 1", 'service: !!python/object/apply:os.system ["touch @TMP@/pwned"]'),
        2, 10, "service", "YAML tag '!!python/object/apply:os.system' is not allowed",
    ),
    (
        "python-tag-nested",
        HEAD + _lines("caches:", "  c:", "    backend: !!python/name:os.system"),
        5, 14, "caches.c.backend", "YAML tag '!!python/name:os.system' is not allowed",
    ),
    ("alias-bomb", _bomb(), 7, 4, "e", "through YAML aliases (an alias bomb?)"),
    (
        "recursive-alias",
        HEAD + _lines("loop: &a [1, *a]"),
        3, 7, "loop[1]", "recursive YAML alias",
    ),
    (
        "undefined-alias",
        HEAD + _lines("http: *nope"),
        3, 7, "", "found undefined alias 'nope'",
    ),
    (
        "control-character",
        _lines("version: 1", 'service: {name: "a\x07"}'),
        2, 19, "", "character U+0007 is not allowed",
    ),
    # --- YAML syntax -----------------------------------------------------------------
    (
        "duplicate-key",
        HEAD + _lines("pools:", "  main: {conninfo: a}", "  main: {conninfo: b}"),
        5, 3, "pools.main", "duplicate key 'main' (first defined on line 4)",
    ),
    (
        "bad-indentation",
        _lines("version: 1", "service:", "  name: shop", " environment: prod"),
        4, 2, "", "(check the indentation of this line)",
    ),
    (
        "over-indented-key",
        _lines("version: 1", "service:", "  name: shop", "    environment: prod"),
        4, 16, "", "mapping values are not allowed here (check the indentation",
    ),
    (
        "unclosed-quote",
        _lines("version: 1", "service:", '  name: "shop', "http: {}"),
        5, 1, "", "quoted scalar started on line 3: found unexpected end of stream",
    ),
    (
        "unclosed-bracket",
        HEAD + _lines("http:", "  exclude: [/healthz, /readyz", "runtime: {}"),
        5, 8, "", "flow sequence started on line 4: expected ',' or ']'",
    ),
    (
        "tab-indentation",
        _lines("version: 1", "service:", "\tname: shop"),
        3, 1, "", "YAML does not allow tabs",
    ),
    (
        "two-documents",
        HEAD + _lines("---", "version: 1"),
        3, 1, "", "expected a single document in the stream, but found another document",
    ),
    # --- shape of the file -----------------------------------------------------------
    (
        "top-level-list",
        _lines("# a list, not a mapping", "- version: 1", "- service: {name: shop}"),
        2, 1, "", "must be a mapping with at least 'version' and 'service'; found a list",
    ),
    ("top-level-scalar", _lines("otelperf"), 1, 1, "", "found a string"),
    ("empty-file", "", 0, 0, "", "found an empty document"),
    ("comments-only", _lines("# to do"), 0, 0, "", "found an empty document"),
    (
        "missing-version",
        _lines("service: {name: shop}"),
        1, 1, "version", "required key 'version' is missing",
    ),
    (
        "missing-service",
        _lines("version: 1"),
        1, 1, "service", "required key 'service' is missing (a mapping with name)",
    ),
    (
        "wrong-version",
        _lines("version: 2", "service: {name: shop}"),
        1, 10, "version", "found 2; expected one of: 1",
    ),
    (
        "version-as-string",
        _lines('version: "1"', "service: {name: shop}"),
        1, 10, "version", "found '1'; expected one of: 1",
    ),
    # --- caches ----------------------------------------------------------------------
    (
        "unknown-cache-backend",
        HEAD + _lines("caches:", "  c: {backend: memcached}"),
        4, 16, "caches.c.backend",
        "unknown backend 'memcached'; expected one of: memory, redis, tiered",
    ),
    (
        "missing-cache-backend",
        HEAD + _lines("caches:", "  c: {ttl: 5m}"),
        4, 3, "caches.c", "missing 'backend'; expected one of: memory, redis, tiered",
    ),
    (
        "pickle-without-signing-key",
        HEAD + _lines("caches:", "  c:", "    backend: memory", "    serializer: pickle"),
        6, 17, "caches.c.serializer", "serializer pickle needs signing_key",
    ),
    (
        "memory-cache-with-lock",
        HEAD + _lines("caches:", "  c: {backend: memory, stampede: lock}"),
        4, 34, "caches.c.stampede", "stampede lock needs a shared backend",
    ),
    (
        "bad-redis-url",
        HEAD + _lines("caches:", "  r: {backend: redis, url: 'http://cache:6379/0'}"),
        4, 28, "caches.r.url", "invalid Redis URL; expected redis://host:port/db",
    ),
    (
        "bad-cache-name",
        HEAD + _lines("caches:", "  my cache: {backend: memory}"),
        4, 3, "caches.my cache", "invalid resource name 'my cache'",
    ),
    # --- pools and batchers ------------------------------------------------------------
    (
        "pool-max-below-min",
        HEAD + _lines("pools:", "  main:", "    conninfo: x", "    min_size: 5", "    max_size: 2"),
        7, 15, "pools.main.max_size", "max_size (2) must be greater or equal than min_size (5)",
    ),
    (
        "pool-min-above-default-max",
        HEAD + _lines("pools:", "  main: {conninfo: x, min_size: 50}"),
        4, 33, "pools.main.min_size", "max_size (10) must be greater or equal than min_size (50)",
    ),
    (
        "sink-with-two-kinds",
        HEAD + _lines(
            "batchers:",
            "  events:",
            "    sink:",
            "      jsonl: {path: events.jsonl}",
            "      callable: {path: 'app.sinks:write'}",
        ),
        5, 5, "batchers.events.sink",
        "a sink needs exactly one of callable, postgres or jsonl; found callable, jsonl",
    ),
    (
        "sink-missing",
        HEAD + _lines("batchers:", "  events: {max_size: 10}"),
        4, 3, "batchers.events.sink",
        "required key 'sink' is missing (a mapping; valid keys: callable, jsonl, postgres)",
    ),
    (
        "batcher-undeclared-pool",
        HEAD + _lines(
            "pools:",
            "  main: {conninfo: x}",
            "batchers:",
            "  events:",
            "    sink: {postgres: {pool: mian, table: events, columns: [ts]}}",
        ),
        7, 29, "batchers.events.sink.postgres.pool",
        "unknown pool 'mian'; did you mean 'main'? declared pools: main",
    ),
    (
        "batcher-pool-without-pools",
        HEAD + _lines(
            "batchers:", "  b:", "    sink: {postgres: {pool: main, table: t, columns: [a]}}"
        ),
        5, 29, "batchers.b.sink.postgres.pool",
        "unknown pool 'main'; declared pools: none are declared under 'pools'",
    ),
    (
        "batcher-queue-below-batch",
        HEAD + _lines(
            "batchers:",
            "  events:",
            "    max_size: 1000",
            "    max_queue: 10",
            "    sink: {jsonl: {path: e.jsonl}}",
        ),
        6, 16, "batchers.events.max_queue",
        "max_queue (10) must be greater or equal than max_size (1000)",
    ),
    (
        "bad-literal",
        HEAD + _lines(
            "batchers:", "  events:", "    on_full: explode", "    sink: {jsonl: {path: e.jsonl}}"
        ),
        5, 14, "batchers.events.on_full",
        "found 'explode'; expected one of: block, drop_oldest, drop_newest, raise",
    ),
    (
        "bad-import-path",
        HEAD + _lines("batchers:", "  events:", "    sink: {callable: {path: write}}"),
        5, 29, "batchers.events.sink.callable.path",
        "invalid import path 'write'; expected 'package.module:function'",
    ),
    # --- profiling and telemetry -------------------------------------------------------
    (
        "hook-with-route-and-function",
        HEAD + _lines(
            "profiling:", "  hooks:", "    - route: /reports/*", "      function: app.reports:build"
        ),
        5, 7, "profiling.hooks[0]", "a profiling hook needs exactly one of route or function",
    ),
    (
        "endpoint-without-token",
        HEAD + _lines("profiling:", "  endpoint: {enabled: true}"),
        4, 23, "profiling.endpoint.enabled", "endpoint.enabled needs on_demand.token",
    ),
    (
        "short-token",
        HEAD + _lines("profiling:", "  on_demand: {token: short}"),
        4, 22, "profiling.on_demand.token",
        "string should have at least 16 characters; found a string (not shown: secret)",
    ),
    (
        "otel-config-file-with-exporter",
        HEAD + _lines("telemetry:", "  otel_config_file: otel.yaml", "  exporter: console"),
        4, 21, "telemetry.otel_config_file",
        "otel_config_file replaces exporter; remove them or remove otel_config_file",
    ),
    (
        "prometheus-traces",
        HEAD + _lines("telemetry:", "  traces: {exporter: prometheus}"),
        4, 22, "telemetry.traces.exporter", "traces.exporter cannot be prometheus",
    ),
    (
        "bad-otlp-endpoint",
        HEAD + _lines("telemetry:", "  otlp: {endpoint: 'localhost:4317'}"),
        4, 20, "telemetry.otlp.endpoint", "invalid endpoint; expected an http:// or https:// URL",
    ),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "line", "column", "path", "fragment"),
    [pytest.param(*case[1:], id=str(case[0])) for case in CASES],
)
def test_malformed_config(
    tmp_path: Path, text: str, line: int, column: int | None, path: str, fragment: str
) -> None:
    """The config is refused with exactly one problem, at the right place, saying what to do."""
    config = tmp_path / "otelperf.yaml"
    config.write_text(text.replace("@TMP@", str(tmp_path)), encoding="utf-8")
    problems = _problems(config)
    assert len(problems) == 1, problems
    (problem,) = problems
    assert problem.source == str(config)
    assert problem.line == line
    if column is not None:
        assert problem.column == column
    assert problem.path == path
    assert fragment in problem.message
    assert not (tmp_path / "pwned").exists()
    where = f"{config}:{line}:{problem.column}" if line else str(config)
    assert str(problem) == f"{where}:{f' {path}:' if path else ''} {problem.message}"


def test_table_is_large_enough() -> None:
    """The table covers at least the 25 malformed configs the issue asks for, ids unique."""
    ids = [case[0] for case in CASES]
    assert len(ids) >= 25
    assert len(set(ids)) == len(ids)


# --- the file itself ------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    """A path that does not exist is one problem without a position."""
    missing = tmp_path / "nope.yaml"
    (problem,) = _problems(missing)
    assert (problem.source, problem.line, problem.path) == (str(missing), 0, "")
    assert problem.message == "config file not found"
    assert str(problem) == f"{missing}: config file not found"


def test_directory(tmp_path: Path) -> None:
    """A directory is refused as such."""
    (problem,) = _problems(tmp_path)
    assert (problem.line, problem.message) == (0, "is a directory, not a config file")


def test_file_in_a_non_directory(tmp_path: Path) -> None:
    """A path through a regular file gives a problem, not an OSError."""
    (tmp_path / "file").write_text("x", encoding="utf-8")
    (problem,) = _problems(tmp_path / "file" / "otelperf.yaml")
    assert problem.line == 0
    assert problem.message.startswith("cannot be read: ")


def test_path_with_a_nul_byte() -> None:
    """A path no operating system accepts is a problem, not a ValueError."""
    with pytest.raises(ConfigError) as info:
        load_config("otelperf\x00.yaml", environ={})
    (problem,) = info.value.problems
    assert problem.message == "cannot be read: invalid path"


def test_file_over_one_mebibyte(tmp_path: Path) -> None:
    """A file one byte over 1 MiB is refused without being parsed."""
    big = tmp_path / "big.yaml"
    big.write_bytes(HEAD.encode() + b"#" * (MAX_CONFIG_BYTES - len(HEAD) + 1))
    (problem,) = _problems(big)
    assert (problem.line, problem.message) == (0, "config is larger than 1024 KiB; refused")


def test_file_of_exactly_one_mebibyte_loads(tmp_path: Path) -> None:
    """The limit is inclusive: a valid file of exactly 1 MiB loads."""
    big = tmp_path / "big.yaml"
    big.write_bytes(HEAD.encode() + b"#" * (MAX_CONFIG_BYTES - len(HEAD)))
    assert big.stat().st_size == MAX_CONFIG_BYTES
    assert load_config(big, environ={}).service.name == "shop"


def test_non_utf8_file(tmp_path: Path) -> None:
    """A Latin-1 file is refused at the line and column of the first undecodable byte."""
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("version: 1\nservice:\n  name: café\n".encode("latin-1"))
    (problem,) = _problems(latin1)
    assert (problem.line, problem.column, problem.path) == (3, 12, "")
    assert problem.message == (
        "not UTF-8 text: byte 0xe9 cannot be decoded; save the file as UTF-8"
    )


def test_non_utf8_column_counts_characters(tmp_path: Path) -> None:
    """The column after multi-byte UTF-8 characters counts characters, not bytes."""
    path = tmp_path / "mixed.yaml"
    path.write_bytes(b"version: 1\nservice: {name: \xc3\xa9\xc3\xa9\xff}\n")
    (problem,) = _problems(path)
    assert (problem.line, problem.column) == (2, 19)


def test_utf16_file(tmp_path: Path) -> None:
    """A UTF-16 file (as some Windows editors save) is refused at its first byte."""
    path = tmp_path / "utf16.yaml"
    path.write_bytes(HEAD.encode("utf-16"))
    (problem,) = _problems(path)
    assert (problem.line, problem.column) == (1, 1)
    assert "not UTF-8 text: byte 0xff" in problem.message


def test_mapping_source_has_no_position() -> None:
    """A mapping passed from Python is validated the same way, without line numbers."""
    with pytest.raises(ConfigError) as info:
        load_config({"version": 1, "service": {"name": "a"}, "pools": {"p": {"conninfo": 5}}})
    (problem,) = info.value.problems
    assert (problem.source, problem.line, problem.column) == ("<mapping>", 0, 0)
    assert str(problem) == (
        "<mapping>: pools.p.conninfo: input should be a valid string; "
        "found a number (not shown: secret)"
    )


# --- several problems ------------------------------------------------------------------


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    """All problems of a file come in one error, sorted by line, cross-checks included."""
    config = tmp_path / "otelperf.yaml"
    config.write_text(
        _lines(
            "version: 1",
            "service:",
            "  name: shop",
            "  verion: 1.2",  # 4
            "batchers:",
            "  events:",
            "    sink: {postgres: {pool: nope, table: t, columns: [a]}}",  # 7
            "    on_full: explode",  # 8
            "telemetry:",
            "  exporter: otlpp",  # 10
            "  otlp: {timeout: 5}",  # 11
            "caches:",
            "  products: {backend: redis, url: 'redis://localhost/0', ttl: 30x}",  # 13
            "  sessions: {backend: memcached}",  # 14
            "pools:",
            "  main:",
            '    conninfo: "${DATABASE_URL}"',  # 17
            "    min_size: lots",  # 18
        ),
        encoding="utf-8",
    )
    problems = _problems(config)
    assert [(p.line, p.column, p.path) for p in problems] == [
        (4, 3, "service.verion"),
        (7, 29, "batchers.events.sink.postgres.pool"),
        (8, 14, "batchers.events.on_full"),
        (10, 13, "telemetry.exporter"),
        (11, 19, "telemetry.otlp.timeout"),
        (13, 63, "caches.products.ttl"),
        (14, 23, "caches.sessions.backend"),
        (17, 15, "pools.main.conninfo"),
        (18, 15, "pools.main.min_size"),
    ]
    assert problems[1].message == "unknown pool 'nope'; declared pools: main"


def test_problems_on_one_line_are_ordered_by_column(tmp_path: Path) -> None:
    """Two problems on one line come left to right."""
    config = tmp_path / "otelperf.yaml"
    config.write_text(HEAD + "caches: {c: {backend: memory, ttl: 5, max_entries: 0}}\n")
    problems = _problems(config)
    assert [(p.line, p.column, p.path) for p in problems] == [
        (3, 36, "caches.c.ttl"),
        (3, 52, "caches.c.max_entries"),
    ]


# --- secrets never reach an error message ---------------------------------------------

CANARIES = ("CANARY-pw-123", "CANARY-redis", "CANARY-tok", "CANARY-sign", "CANARY-prof")

SECRET_CASES = [
    (
        "redis-url-with-wrong-scheme",
        HEAD + _lines("caches:", "  r: {backend: redis, url: 'http://:CANARY-redis@cache:6379/0'}"),
    ),
    (
        "redis-url-and-bad-sibling",
        HEAD
        + _lines("caches:", "  r: {backend: redis, url: 'redis://u:CANARY-redis@c/0', ttl: 1}"),
    ),
    (
        "dsn-with-bad-min-size",
        HEAD
        + _lines(
            "pools:",
            "  main:",
            "    conninfo: postgresql://app:CANARY-pw-123@db/x",
            "    min_size: -1",
        ),
    ),
    (
        "dsn-with-max-below-min",
        HEAD
        + _lines(
            "pools:",
            "  main:",
            "    conninfo: postgresql://app:CANARY-pw-123@db/x",
            "    min_size: 9",
            "    max_size: 1",
        ),
    ),
    (
        "conninfo-of-wrong-type",
        HEAD + _lines("pools:", "  main:", "    conninfo: ['postgresql://app:CANARY-pw-123@db/x']"),
    ),
    (
        "conninfo-as-a-mapping",
        HEAD
        + _lines("pools:", "  main:", "    conninfo: {url: 'postgresql://app:CANARY-pw-123@db/x'}"),
    ),
    (
        "libpq-conninfo-with-bad-sibling",
        HEAD
        + _lines("pools:", "  main:", "    conninfo: host=db password=CANARY-pw-123", "    x: 1"),
    ),
    (
        "dsn-in-a-literal-field",
        HEAD + _lines("telemetry:", "  exporter: 'postgresql://app:CANARY-pw-123@db/x'"),
    ),
    (
        "dsn-with-at-sign-in-a-literal-field",
        HEAD + _lines("telemetry:", "  exporter: 'redis://u:CANARY-redis@pw@cache/0'"),
    ),
    (
        "header-with-bad-endpoint",
        HEAD
        + _lines(
            "telemetry:",
            "  otlp:",
            "    endpoint: collector:4317",
            "    headers: {authorization: Bearer CANARY-tok}",
        ),
    ),
    (
        "header-of-wrong-type",
        HEAD + _lines("telemetry:", "  otlp:", "    headers: {authorization: [Bearer CANARY-tok]}"),
    ),
    (
        "headers-as-a-string",
        HEAD + _lines("telemetry:", "  otlp:", "    headers: 'authorization=Bearer CANARY-tok'"),
    ),
    (
        "endpoint-with-credentials",
        HEAD + _lines("telemetry:", "  otlp: {endpoint: 'grpc://user:CANARY-tok@collector:4317'}"),
    ),
    (
        "signing-key-of-wrong-type",
        HEAD + _lines("caches:", "  c: {backend: memory, signing_key: [CANARY-sign]}"),
    ),
    (
        "signing-key-and-bad-sibling",
        HEAD
        + _lines(
            "caches:",
            "  c: {backend: memory, serializer: pickle, signing_key: CANARY-sign, ttl: x}",
        ),
    ),
    (
        "short-profiling-token",
        HEAD + _lines("profiling:", "  on_demand: {token: CANARY-prof}"),
    ),
    (
        "profiling-token-of-wrong-type",
        HEAD + _lines("profiling:", "  on_demand: {token: {CANARY-prof: 1}}"),
    ),
    (
        "duplicate-header",
        HEAD
        + _lines(
            "telemetry:",
            "  otlp:",
            "    headers:",
            "      authorization: Bearer CANARY-tok",
            "      authorization: Bearer CANARY-tok",
        ),
    ),
    (
        "syntax-error-on-a-secret-line",
        HEAD + _lines("pools:", "  main:", '    conninfo: "postgresql://app:CANARY-pw-123@db/x'),
    ),
    (
        "tab-on-a-secret-line",
        HEAD + _lines("pools:", "  main:", "\tconninfo: postgresql://app:CANARY-pw-123@db/x"),
    ),
    (
        "invalid-reference-next-to-a-secret",
        HEAD
        + _lines("pools:", "  main:", "    conninfo: postgresql://app:CANARY-pw-123@db/${X:?}"),
    ),
    (
        "unknown-key-holding-a-secret",
        HEAD + _lines("caches:", "  c: {backend: memory, pasword: CANARY-sign}"),
    ),
]


@pytest.mark.parametrize("text", [pytest.param(text, id=name) for name, text in SECRET_CASES])
def test_secrets_never_reach_error_messages(tmp_path: Path, text: str) -> None:
    """Passwords, tokens, headers and keys around an invalid value are not in the error."""
    config = tmp_path / "otelperf.yaml"
    config.write_text(text, encoding="utf-8")
    problems = _problems(config)
    assert problems
    with pytest.raises(ConfigError) as info:
        load_config(config, environ={})
    shown = "\n".join([str(info.value), repr(info.value.problems), *map(repr, info.value.args)])
    for canary in CANARIES:
        assert canary not in shown


def test_non_utf8_file_with_a_secret(tmp_path: Path) -> None:
    """The undecodable-byte message does not echo the bytes around it."""
    config = tmp_path / "otelperf.yaml"
    config.write_bytes(HEAD.encode() + b"pools: {main: {conninfo: 'CANARY-pw-123\xff'}}\n")
    (problem,) = _problems(config)
    assert "CANARY" not in str(problem)
