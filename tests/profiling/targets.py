"""Functions the ``module:qualname`` hooks of the tests point at."""

from __future__ import annotations

import asyncio
import time


def build_report(seconds: float) -> int:
    """CPU work for ``seconds``, in this function's own body."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        for i in range(200):
            total += i * i
    return total


async def render_report(seconds: float) -> str:
    """Await-bound work for ``seconds``."""
    await asyncio.sleep(seconds)
    return "rendered"


class Pricing:
    """Methods of every kind, each doing CPU work."""

    def reprice(self, seconds: float) -> int:
        return build_report(seconds)

    @staticmethod
    def quote(seconds: float) -> int:
        return build_report(seconds)

    @classmethod
    def batch(cls, seconds: float) -> int:
        return build_report(seconds)


NOT_A_FUNCTION = 42
