"""The ``otelperf`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from otelperf._errors import ConfigError, OtelperfError
from otelperf._redact import MASK, redact_text
from otelperf._version import __version__
from otelperf.config import Config, load_config
from otelperf.config._schema import SECRET_KEYS

__all__ = ["main", "masked", "schema"]


def masked(value: Any, key: str | None = None) -> Any:
    """A copy of dumped config data with every secret masked.

    Values under secret keys are masked whole (``headers`` per value), except
    URLs and connection strings, which keep everything but the password so the
    output still says where things point.
    """
    if isinstance(value, dict):
        if key == "headers":
            return {k: MASK for k in value}
        return {k: masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    if isinstance(value, str):
        if key in SECRET_KEYS and key not in ("url", "conninfo", "dsn"):
            return MASK
        return redact_text(value)
    return value


def schema() -> dict[str, Any]:
    """The JSON Schema of the config file, for editors and validators."""
    out = Config.model_json_schema(mode="validation")
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["$id"] = "https://otelperf.dev/schema/v1.json"
    out["title"] = "otelperf config"
    return out


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return 1
    data = masked(config.model_dump(mode="json"))
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        print(f"# {args.config}: valid (secrets masked)")
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    if args.connect:
        return _connect(config, args.config, args.timeout)
    return 0


def _connect(config: Config, source: str, timeout: float) -> int:
    """Reach every declared Redis and PostgreSQL once; 0 when all answered."""
    import asyncio

    from otelperf._perf import Perf

    perf = Perf(config, source=source)
    results = asyncio.run(perf.resources.ping_all(timeout))
    if not results:
        print("# --connect: the config declares nothing to connect to", file=sys.stderr)
        return 0
    failed = 0
    for label, ok, detail, seconds in results:
        stream = sys.stdout if ok else sys.stderr
        print(f"{label}: {detail} ({seconds * 1000:.1f} ms)", file=stream)
        failed += not ok
    if failed:
        print(f"{failed} of {len(results)} unreachable", file=sys.stderr)
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(schema(), indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otelperf",
        description="Declarative, observable performance plumbing for ASGI services.",
        epilog="Run 'otelperf COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"otelperf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="validate a config and print it resolved, secrets masked",
        description="Validate CONFIG: substitute ${VAR} references, check every key and value, "
        "and print the resolved config with passwords, tokens and headers masked. "
        "Exits 1 and prints one line per problem (file:line:column: key: what is wrong) "
        "when the config is invalid.",
    )
    check.add_argument("config", help="path to an otelperf YAML file")
    check.add_argument("--format", choices=["yaml", "json"], default="yaml", help="output format")
    check.add_argument(
        "--connect",
        action="store_true",
        help="also reach each declared cache (Redis PING) and pool (SELECT 1); exit 1 on failure",
    )
    check.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for each --connect check"
    )
    check.set_defaults(run=_check)

    schema_cmd = commands.add_parser(
        "schema",
        help="print the JSON Schema of the config file",
        description="Print the JSON Schema of the config file, for editor completion "
        "(e.g. '# yaml-language-server: $schema=otelperf.schema.json').",
    )
    schema_cmd.set_defaults(run=_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except OtelperfError as exc:
        print(f"otelperf: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
