"""Write the generated reference pages: ``python -m otelperf._docgen [DOCS_DIR]``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

__all__ = ["generated"]


def generated() -> dict[str, str]:
    """Each generated page under ``docs/`` by file name, with its content."""
    from otelperf import _instruments
    from otelperf.config._docs import render_markdown as render_config

    components = (
        "otelperf.http",
        "otelperf.runtime",
        "otelperf.batch",
        "otelperf.profiling",
        "otelperf.cache",
        "otelperf.pool",
    )
    for module in components:  # they register their instruments
        importlib.import_module(module)
    return {"config.md": render_config(), "metrics.md": _instruments.render_markdown()}


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path("docs")
    for name, text in generated().items():
        (target / name).write_text(text, encoding="utf-8")
        print(f"wrote {target / name}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
