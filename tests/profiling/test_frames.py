"""Top frames by own time: library and await time charged to the application code that ran."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

import otelperf.profiling._frames as frames_module
from otelperf.profiling._frames import AppCode, cprofile_top, is_application_file, pyinstrument_top

APP = os.path.abspath(__file__)
LIB = os.path.abspath(json.__file__)
THREAD = "MainThread\x00<thread>\x00140000"


def _info(name: str, path: str, line: int, *attributes: str) -> str:
    return "\x00".join((name, path, str(line))) + "".join(f"\x01{a}" for a in attributes)


def test_application_files_exclude_stdlib_packages_and_otelperf() -> None:
    """The tests are application code; the stdlib, installed packages and otelperf are not."""
    import pyinstrument

    assert is_application_file(APP)
    assert not is_application_file(LIB)
    assert not is_application_file(os.path.abspath(pyinstrument.__file__))
    assert not is_application_file(os.path.abspath(frames_module.__file__))
    for special in ("<built-in>", "<frozen importlib._bootstrap>", "~", ""):
        assert not is_application_file(special)


def test_app_packages_count_as_application_code_where_installed() -> None:
    """A package named in app_packages is application code even in site-packages."""
    import pyinstrument
    import pyinstrument.renderers.html as html

    installed = os.path.abspath(pyinstrument.__file__)
    app = AppCode(["pyinstrument", "json"])
    assert app(installed)
    assert app(os.path.abspath(html.__file__))
    assert app(LIB)
    assert not app(os.path.abspath(pytest.__file__))
    assert not app(os.path.abspath(frames_module.__file__))  # otelperf never is
    assert not AppCode(["pyinstrument.renderers"])(installed)
    assert AppCode(["pyinstrument.renderers"])(os.path.abspath(html.__file__))


def test_pyinstrument_time_goes_to_the_deepest_application_frame() -> None:
    """Library, built-in and await time is charged to the app frame below it, ranked."""
    root = _info("handler", APP, 10)
    leaf = _info("reprice", APP, 20, "cPricing", "l25")
    library = _info("dumps", LIB, 183)
    builtin = "encode\x00<built-in>\x000"
    records: list[tuple[list[str], float]] = [
        ([THREAD, root, library, builtin], 0.3),
        ([THREAD, root, leaf], 0.1),
        ([THREAD, root, library, "[await]"], 0.2),
        ([THREAD, library], 0.05),
        ([THREAD, root, "[out-of-context]"], 0.01),
    ]
    top = pyinstrument_top(records, 10)
    assert [f.function for f in top] == ["handler", "Pricing.reprice", "dumps"]
    assert [(f.self_time, f.await_time) for f in top] == [
        pytest.approx((0.51, 0.21)),
        pytest.approx((0.1, 0.0)),
        pytest.approx((0.05, 0.0)),
    ]
    assert top[0].location.endswith("test_frames.py:10")
    assert top[0].describe() == f"handler ({top[0].location})"
    assert [f.function for f in pyinstrument_top(records, 1)] == ["handler"]


def test_pyinstrument_merges_calls_of_one_function() -> None:
    """Samples of one function at different lines add up under one entry."""
    first = _info("loop", APP, 5, "l6")
    second = _info("loop", APP, 5, "l9")
    top = pyinstrument_top([([THREAD, first], 0.2), ([THREAD, second], 0.3)], 5)
    assert [f.function for f in top] == ["loop"]
    assert top[0].self_time == pytest.approx(0.5)


def _stat(tt: float, ct: float, callers: dict[Any, tuple[int, int, float, float]]) -> Any:
    return (1, 1, tt, ct, callers)


def test_cprofile_library_time_is_shared_among_its_callers() -> None:
    """A library function's own time goes to its app callers by their cumulative share."""
    a = (APP, 10, "report_a")
    b = (APP, 20, "report_b")
    lib = (LIB, 183, "dumps")
    deep = (LIB, 200, "encode")
    builtin = ("~", 0, "<built-in method time.sleep>")
    stats = {
        a: _stat(0.1, 0.9, {}),
        b: _stat(0.0, 0.3, {}),
        lib: _stat(0.4, 1.0, {a: (1, 1, 0.3, 0.75), b: (1, 1, 0.1, 0.25)}),
        deep: _stat(0.4, 0.4, {lib: (1, 1, 0.4, 0.4)}),
        builtin: _stat(0.2, 0.2, {b: (1, 1, 0.2, 0.2)}),
    }
    top = {f.function: f.self_time for f in cprofile_top(stats, 10)}
    assert top == pytest.approx({"report_a": 0.1 + 0.75 * 0.8, "report_b": 0.25 * 0.8 + 0.2})
    assert all(f.await_time == 0 for f in cprofile_top(stats, 10))


def test_cprofile_library_cycle_without_app_caller_keeps_its_time() -> None:
    """Library functions calling each other with no app caller are charged to themselves."""
    x = (LIB, 1, "x")
    y = (LIB, 2, "y")
    stats = {x: _stat(0.3, 0.5, {y: (1, 1, 0.3, 0.5)}), y: _stat(0.2, 0.5, {x: (1, 1, 0.2, 0.5)})}
    top = {f.function: f.self_time for f in cprofile_top(stats, 10)}
    assert sum(top.values()) == pytest.approx(0.5)
    assert set(top) <= {"x", "y"}
