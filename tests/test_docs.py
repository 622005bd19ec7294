"""The README and docs stay true: generated reference in sync, code blocks run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from otelperf._docgen import generated

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("name", sorted(generated()))
def test_generated_docs_are_current(name: str) -> None:
    """docs/config.md and docs/metrics.md match schema and registry (python -m otelperf._docgen)."""
    assert (ROOT / "docs" / name).read_text(encoding="utf-8") == generated()[name]


@pytest.mark.parametrize("index", range(len(_python_blocks((ROOT / "README.md").read_text()))))
def test_readme_python_blocks_run(index: int) -> None:
    """Each python block of the README executes without error."""
    block = _python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[index]
    exec(compile(block, f"README.md[python block {index}]", "exec"), {"__name__": "__readme__"})


def test_readme_commands_match_ci() -> None:
    """.ci/run runs exactly the README's test command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```sh\n(.*?)\n```", readme, flags=re.DOTALL)
    test_command = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command.strip() in ci.splitlines()


def test_readme_reference_lists_every_shipped_config() -> None:
    """Every file in configs/ is named in the README, so users can find it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in (ROOT / "configs").glob("*.yaml"):
        assert path.name in readme, path.name
