"""The `otelperf` command line: check, schema, --version; secrets never printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

import otelperf
from otelperf import load_config
from otelperf.cli import main
from otelperf.config._yaml import parse_yaml
from tests.config.test_fuzz import ENVIRON, VALID

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

CANARIES = ("CANARY-pw-123", "CANARY-redis", "CANARY-tok", "CANARY-sign", "CANARY-prof")

SECRET_CONFIG = """\
version: 1
service: {name: shop-api}
telemetry:
  exporter: otlp
  otlp:
    endpoint: "https://collector.example:4318"
    protocol: http/protobuf
    headers: {authorization: "Bearer CANARY-tok", x-tenant: shop}
caches:
  products:
    backend: redis
    url: "redis://:CANARY-redis@cache.internal:6379/0"
    serializer: pickle
    signing_key: "CANARY-sign-0123456789"
pools:
  main:
    conninfo: "postgresql://app:CANARY-pw-123@db/x"
  reports:
    conninfo: "host=replica port=5432 user=app password=CANARY-pw-123"
profiling:
  on_demand: {token: "CANARY-prof-0123456789"}
"""

INVALID_SECRET_CONFIG = """\
version: 1
service: {name: shop-api}
telemetry:
  otlp:
    endpoint: "collector:4317"
    headers: {authorization: [Bearer CANARY-tok]}
caches:
  products: {backend: redis, url: "http://:CANARY-redis@cache:6379/0", ttl: 30x}
  sessions: {backend: memory, serializer: pickle, signing_key: [CANARY-sign]}
pools:
  main: {conninfo: "postgresql://app:CANARY-pw-123@db/x", min_size: -1}
  other: {conninfo: ["postgresql://app:CANARY-pw-123@db/x"]}
profiling:
  on_demand: {token: CANARY-prof}
"""

# file:line:column: key.path: message, or file: message when there is no position.
PROBLEM_LINE = re.compile(
    r"^(?P<file>[^:]+)(?::(?P<line>\d+):(?P<col>\d+))?:(?: (?P<path>\S+):)? .+$"
)


def _write(tmp_path: Path, text: str, name: str = "otelperf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _assert_no_canary(*texts: str) -> None:
    for text in texts:
        for canary in CANARIES:
            assert canary not in text


# --- check: a valid config ---------------------------------------------------------------


def test_check_valid_prints_masked_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid config exits 0 and prints parseable YAML with every secret masked."""
    path = _write(tmp_path, SECRET_CONFIG)
    status, out, err = _run(capsys, "check", str(path))
    assert (status, err) == (0, "")
    assert out.startswith(f"# {path}: valid (secrets masked)\n")
    _assert_no_canary(out)
    data = yaml.safe_load(out)
    otlp = data["telemetry"]["otlp"]
    assert otlp["headers"] == {"authorization": "****", "x-tenant": "****"}
    assert otlp["endpoint"] == "https://collector.example:4318"
    products = data["caches"]["products"]
    # URLs keep everything but the password, so the output still says where things point.
    assert products["url"] == "redis://:****@cache.internal:6379/0"
    assert products["signing_key"] == "****"
    assert data["pools"]["main"]["conninfo"] == "postgresql://app:****@db/x"
    assert data["pools"]["reports"]["conninfo"] == "host=replica port=5432 user=app password=****"
    assert data["profiling"]["on_demand"]["token"] == "****"
    # Defaults are filled in and units are resolved.
    assert data["pools"]["main"]["max_size"] == 10
    assert data["caches"]["products"]["ttl"] == 300.0


def test_check_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--format json` prints the same resolved, masked config as JSON."""
    path = _write(tmp_path, SECRET_CONFIG)
    status, out, _ = _run(capsys, "check", "--format", "json", str(path))
    assert status == 0
    _assert_no_canary(out)
    data = json.loads(out)
    assert data["pools"]["main"]["conninfo"] == "postgresql://app:****@db/x"
    assert data["caches"]["products"]["signing_key"] == "****"


def test_check_masks_secrets_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets that arrive through ${VAR} are masked like secrets written in the file."""
    monkeypatch.setenv("OTELPERF_TEST_DSN", "postgresql://app:CANARY-pw-123@db.internal/app")
    monkeypatch.setenv("OTELPERF_TEST_TOKEN", "CANARY-tok")
    path = _write(
        tmp_path,
        "version: 1\nservice: {name: a}\n"
        "telemetry: {otlp: {headers: {authorization: 'Bearer ${OTELPERF_TEST_TOKEN}'}}}\n"
        "pools: {main: {conninfo: '${OTELPERF_TEST_DSN}'}}\n",
    )
    status, out, err = _run(capsys, "check", str(path))
    assert status == 0
    _assert_no_canary(out, err)
    data = yaml.safe_load(out)
    assert data["pools"]["main"]["conninfo"] == "postgresql://app:****@db.internal/app"


def test_check_as_a_subprocess(tmp_path: Path) -> None:
    """`python -m otelperf check` exits 0 and prints no secret, from file or environment."""
    path = _write(tmp_path, SECRET_CONFIG.replace('"postgresql://app:CANARY', '"${DSN_PREFIX}'))
    env = {**os.environ, "DSN_PREFIX": "postgresql://app:CANARY"}
    result = subprocess.run(
        [sys.executable, "-m", "otelperf", "check", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    _assert_no_canary(result.stdout, result.stderr)
    assert "CANARY" not in result.stdout
    assert yaml.safe_load(result.stdout)["pools"]["main"]["conninfo"] == (
        "postgresql://app:****@db/x"
    )


# --- check: an invalid config ------------------------------------------------------------


def test_check_invalid_lists_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid config exits 1 with one line per problem on stderr and nothing on stdout."""
    path = _write(
        tmp_path,
        "version: 1\nservice:\n  name: shop\n  verion: 1.2\ntelemetry:\n  exporter: otlpp\n",
    )
    status, out, err = _run(capsys, "check", str(path))
    assert (status, out) == (1, "")
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"{path}:4:3: service.verion: unknown key 'verion'; did you mean 'version'? "
        "valid keys: attributes, environment, name, namespace, version",
        f"{path}:6:13: telemetry.exporter: found 'otlpp'; "
        "expected one of: otlp, console, prometheus, file, none",
        "2 problems found",
    ]


def test_check_invalid_never_prints_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Problems next to secrets are reported without the secrets, each on its own line."""
    path = _write(tmp_path, INVALID_SECRET_CONFIG)
    status, out, err = _run(capsys, "check", str(path))
    assert (status, out) == (1, "")
    _assert_no_canary(err)
    lines = err.splitlines()
    assert lines[-1] == f"{len(lines) - 1} problems found"
    assert len(lines) - 1 >= 7
    for line in lines[:-1]:
        match = PROBLEM_LINE.match(line)
        assert match, line
        assert match["file"] == str(path)
        assert match["line"] is not None


def test_check_invalid_as_a_subprocess(tmp_path: Path) -> None:
    """Run as a program, an invalid config exits 1 without a traceback or a secret."""
    path = _write(tmp_path, INVALID_SECRET_CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "otelperf", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert "Traceback" not in result.stderr
    _assert_no_canary(result.stderr)
    assert result.stderr.rstrip().endswith("problems found")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.yaml", "config file not found"),
        (lambda tmp: tmp, "is a directory, not a config file"),
        (lambda tmp: _write(tmp, "version: 1\n", "c.yaml"), "required key 'service'"),
        (lambda tmp: _write(tmp, "a: [\n", "c.yaml"), "invalid YAML"),
        (lambda tmp: _write(tmp, "a: !!python/object/apply:os.exit [3]\n", "c.yaml"), "tag"),
    ],
    ids=["missing", "directory", "incomplete", "syntax", "python-tag"],
)
def test_check_unusable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    """Missing files, directories and broken YAML exit 1 with a message, never a traceback."""
    status, out, err = _run(capsys, "check", str(make(tmp_path)))
    assert (status, out) == (1, "")
    assert message in err
    assert "Traceback" not in err
    assert err.endswith("1 problem found\n")


def test_check_without_a_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`otelperf check` without CONFIG is an argparse usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2
    assert "the following arguments are required: config" in capsys.readouterr().err


# --- schema -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The JSON Schema printed by `otelperf schema`."""
    return _schema_output()


def _schema_output() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "otelperf", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_schema_is_valid_json_schema(schema: dict[str, Any]) -> None:
    """`otelperf schema` prints a valid draft 2020-12 JSON Schema for the config file."""
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["version", "service"]
    assert schema["additionalProperties"] is False


def test_schema_in_process(capsys: pytest.CaptureFixture[str], schema: dict[str, Any]) -> None:
    """In process, `schema` exits 0 and prints the same document."""
    status, out, _ = _run(capsys, "schema")
    assert status == 0
    assert json.loads(out) == schema


MINIMAL = {"version": 1, "service": {"name": "shop"}}


def _config_documents() -> list[Any]:
    params: list[Any] = [pytest.param(None, id="minimal")]
    params += [pytest.param(path, id=path.name) for path in CONFIGS]
    return params


@pytest.mark.parametrize("path", _config_documents())
def test_configs_validate_against_schema(schema: dict[str, Any], path: Path | None) -> None:
    """Every shipped config (and a minimal one) loads and also validates against the schema."""
    if path is None:
        data: Any = MINIMAL
        assert load_config(data).service.name == "shop"
    else:
        text = path.read_text(encoding="utf-8")
        doc, problems = parse_yaml(text, str(path), {})
        assert problems == []
        load_config(path, environ={})
        data = doc.data
    jsonschema.Draft202012Validator(schema).validate(data)


def test_design_example_validates_against_schema(schema: dict[str, Any]) -> None:
    """The full example config (every section) loads and validates against the schema."""
    doc, problems = parse_yaml(VALID, "design.yaml", ENVIRON)
    assert problems == []
    jsonschema.Draft202012Validator(schema).validate(doc.data)


@pytest.mark.parametrize(
    "data",
    [
        {**MINIMAL, "cachez": {}},
        {"service": {"name": "shop"}},
        {**MINIMAL, "version": 2},
        {**MINIMAL, "caches": {"c": {"backend": "memcached"}}},
        {**MINIMAL, "caches": {"c": {"backend": "memory", "ttl": "30x"}}},
        {**MINIMAL, "pools": {"p": {"conninfo": "x", "timeout": 5}}},
        {**MINIMAL, "telemetry": {"traces": {"sample_ratio": "150%"}}},
        {**MINIMAL, "profiling": {"max_total_size": "12 parsecs"}},
    ],
    ids=["unknown-key", "no-version", "version-2", "backend", "duration", "bare", "ratio", "size"],
)
def test_schema_refuses_what_the_loader_refuses(schema: dict[str, Any], data: Any) -> None:
    """Configs the loader refuses are refused by the schema too (validation is not vacuous)."""
    with pytest.raises(otelperf.ConfigError):
        load_config(data)
    assert not jsonschema.Draft202012Validator(schema).is_valid(data)


# --- version ----------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` prints the package version and exits 0."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"otelperf {otelperf.__version__}\n"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command, the usage is printed on stderr and the exit status is 2."""
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: otelperf" in capsys.readouterr().err


def _connect_config(tmp_path: Path, redis_url: str, postgres_dsn: str, *, broken: bool) -> Path:
    from urllib.parse import urlsplit

    pg = urlsplit(postgres_dsn)
    redis = urlsplit(redis_url)
    lines = [
        "version: 1",
        "service: {name: connect-test}",
        "caches:",
        f'  hot: {{backend: redis, url: "redis://:CANARY-pw-99@{redis.hostname}:{redis.port}/0"}}',
        "  local: {backend: memory}",
        "pools:",
        f'  main: {{conninfo: "postgresql://{pg.username}:CANARY-pw-99@{pg.hostname}:{pg.port}'
        f'{pg.path}"}}',
    ]
    lines += [
        "batchers:",
        "  events: {sink: {postgres: {pool: main, table: pg_class, columns: [relname]}}}",
    ]
    if broken:
        lines.insert(
            -2, '  gone: {conninfo: "postgresql://app:CANARY-pw-99@127.0.0.1:1/x", timeout: 1s}'
        )
    path = tmp_path / "connect.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_check_connect_reaches_real_services(
    tmp_path: Path, redis_url: str, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """check --connect pings Redis and PostgreSQL for real and exits 0 when all answer."""
    path = _connect_config(tmp_path, redis_url, postgres_dsn, broken=False)
    assert main(["check", str(path), "--connect"]) == 0
    out = capsys.readouterr()
    assert "caches.hot: ok" in out.out
    assert "pools.main: ok" in out.out
    assert "batchers.events: ok" in out.out  # reached through its pool
    assert "CANARY-pw-99" not in out.out + out.err


def test_check_connect_fails_on_an_unreachable_pool(
    tmp_path: Path, redis_url: str, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable server makes check --connect exit 1, naming it without its password."""
    path = _connect_config(tmp_path, redis_url, postgres_dsn, broken=True)
    assert main(["check", str(path), "--connect", "--timeout", "3"]) == 1
    out = capsys.readouterr()
    assert "pools.gone:" in out.err
    assert "1 of 5 unreachable" in out.err
    assert "CANARY-pw-99" not in out.out + out.err
