"""Durations, sizes and ratios: what the loader accepts, what it refuses, and the JSON schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from otelperf import ConfigError, load_config
from otelperf.config._units import Duration, Ratio, Size, parse_duration, parse_ratio, parse_size

DURATIONS_OK: list[tuple[Any, float]] = [
    ("250ms", 0.25),
    ("2s", 2.0),
    ("30m", 1800.0),
    ("1h30m", 5400.0),
    ("1h 30m", 5400.0),
    ("28d", 28 * 86400.0),
    ("1w", 7 * 86400.0),
    ("1.5s", 1.5),
    ("100us", 1e-4),
    ("100µs", 1e-4),
    (" 5m ", 300.0),
    (0, 0.0),
    (0.0, 0.0),
    ("0", 0.0),
]
DURATIONS_BAD: list[Any] = [
    5,
    2.5,
    -1,
    "5",
    "abc",
    "5x",
    "-5s",
    "s",
    "",
    "1 0s",
    ".5s",
    "5 seconds",
    "٣s",  # an Arabic-Indic digit: Python's float() reads it, the schema would not
    True,
    False,
    None,
    [],
    {},
]


@pytest.mark.parametrize(("value", "seconds"), DURATIONS_OK, ids=repr)
def test_duration_accepted(value: Any, seconds: float) -> None:
    """Durations with a unit (and a bare zero) become seconds."""
    parsed = parse_duration(value)
    assert parsed == pytest.approx(seconds)
    assert type(parsed) is float


@pytest.mark.parametrize("value", DURATIONS_BAD, ids=repr)
def test_duration_refused(value: Any) -> None:
    """Bare non-zero numbers, booleans, negative and unknown units are refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_bare_number_message_suggests_units() -> None:
    """`timeout: 5` is refused with the two readings spelled out."""
    with pytest.raises(ValueError, match=r"bare number 5; a duration needs a unit: write e\.g\. "):
        parse_duration(5)


SIZES_OK: list[tuple[Any, int]] = [
    ("512KiB", 524288),
    ("1MB", 1_000_000),
    ("1mb", 1_000_000),
    (1024, 1024),
    ("1024", 1024),
    ("1.5MiB", 1572864),
    ("2 GiB", 2 * 1024**3),
    ("10kB", 10_000),
    ("7B", 7),
    (0, 0),
]
SIZES_BAD: list[Any] = [
    -1,
    "-1KiB",
    "abc",
    "KiB",
    "",
    "10 k",
    "1TB",
    "1.5.2MB",
    1.5,
    True,
    None,
    ["1KiB"],
]


@pytest.mark.parametrize(("value", "size"), SIZES_OK, ids=repr)
def test_size_accepted(value: Any, size: int) -> None:
    """Sizes are bytes, bare or with a decimal or binary unit."""
    parsed = parse_size(value)
    assert parsed == size
    assert type(parsed) is int


@pytest.mark.parametrize("value", SIZES_BAD, ids=repr)
def test_size_refused(value: Any) -> None:
    """Negative, fractional bare, unit-only and unknown-unit sizes are refused."""
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(value)


RATIOS_OK: list[tuple[Any, float]] = [
    ("99.9%", 0.999),
    ("99%", 0.99),
    ("0%", 0.0),
    ("100%", 1.0),
    ("5 %", 0.05),
    (0.05, 0.05),
    (0, 0.0),
    (1, 1.0),
]
RATIOS_BAD: list[Any] = [
    "150%",
    1.5,
    -0.1,
    "-5%",
    "100.1%",
    "0.5",
    "abc%",
    "%",
    "nan%",
    float("nan"),
    float("inf"),
    True,
    None,
]


@pytest.mark.parametrize(("value", "ratio"), RATIOS_OK, ids=repr)
def test_ratio_accepted(value: Any, ratio: float) -> None:
    """Percentages and fractions in [0, 1] become a fraction."""
    assert parse_ratio(value) == pytest.approx(ratio)


@pytest.mark.parametrize("value", RATIOS_BAD, ids=repr)
def test_ratio_refused(value: Any) -> None:
    """Values outside [0, 1], strings without '%', NaN and booleans are refused."""
    with pytest.raises(ValueError, match="invalid ratio"):
        parse_ratio(value)


def _accepted(adapter: TypeAdapter[Any], value: Any) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def _schema_accepts(adapter: TypeAdapter[Any], value: Any) -> bool:
    return bool(jsonschema.Draft202012Validator(adapter.json_schema()).is_valid(value))


_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "duration": TypeAdapter(Duration),
    "size": TypeAdapter(Size),
    "ratio": TypeAdapter(Ratio),
}
_SAMPLES = {
    "duration": [v for v, _ in DURATIONS_OK] + [v for v in DURATIONS_BAD if v is not None],
    "size": [v for v, _ in SIZES_OK] + [v for v in SIZES_BAD if v is not None],
    "ratio": [v for v, _ in RATIOS_OK] + [v for v in RATIOS_BAD if isinstance(v, (str, int))],
}


@pytest.mark.parametrize(
    ("kind", "value"),
    [(kind, value) for kind, values in _SAMPLES.items() for value in values],
    ids=repr,
)
def test_json_schema_agrees_with_loader(kind: str, value: Any) -> None:
    """The published JSON schema accepts a unit value exactly when the loader does."""
    adapter = _ADAPTERS[kind]
    assert _schema_accepts(adapter, value) == _accepted(adapter, value)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(sorted(_ADAPTERS)),
    text=st.text(alphabet="0123456789.% \tsmhdwuµkKMGiIbB-x", max_size=12),
)
def test_json_schema_agrees_with_loader_on_random_text(kind: str, text: str) -> None:
    """For random unit-like text too, schema and loader agree."""
    adapter = _ADAPTERS[kind]
    assert _schema_accepts(adapter, text) == _accepted(adapter, text)


def test_units_through_a_config(tmp_path: Path) -> None:
    """Units written in a file are parsed once at load, into seconds, bytes and fractions."""
    path = tmp_path / "otelperf.yaml"
    path.write_text(
        "version: 1\n"
        "service: {name: a}\n"
        "http:\n"
        "  slo:\n"
        "    latency: {threshold: 250ms, target: 99%}\n"
        "    availability: {target: 99.9%}\n"
        "    window: 28d\n"
        "  compression: {min_size: 1KiB}\n"
        "caches:\n"
        "  c: {backend: memory, ttl: 1h30m, ttl_jitter: 0.1}\n",
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    slo = config.http.slo
    assert slo is not None
    assert slo.latency is not None
    assert slo.availability is not None
    assert slo.latency.threshold == pytest.approx(0.25)
    assert slo.latency.target == pytest.approx(0.99)
    assert slo.availability.target == pytest.approx(0.999)
    assert slo.window == 28 * 86400
    assert config.http.compression is not None
    assert config.http.compression.min_size == 1024
    assert config.caches["c"].ttl == 5400
    assert config.caches["c"].ttl_jitter == pytest.approx(0.1)


def test_zero_where_a_positive_duration_is_needed(tmp_path: Path) -> None:
    """A bare 0 parses as a duration but a field needing more than zero still refuses it."""
    path = tmp_path / "otelperf.yaml"
    path.write_text(
        "version: 1\nservice: {name: a}\npools:\n  main: {conninfo: x, timeout: 0}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.path) == (4, 32, "pools.main.timeout")
    assert "greater than 0" in problem.message
