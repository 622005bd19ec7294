"""Functions the callable-sink tests name by import path."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

received: list[tuple[str, list[Any], str]] = []
"""(which function, the batch, the thread it ran on)."""

not_a_function = 42


def write_sync(items: list[Any]) -> None:
    if "bad" in items:
        raise ValueError("bad item")
    received.append(("sync", list(items), threading.current_thread().name))


async def write_async(items: list[Any]) -> None:
    await asyncio.sleep(0)
    received.append(("async", list(items), threading.current_thread().name))


class Writer:
    """An object whose class defines an async __call__."""

    async def __call__(self, items: list[Any]) -> None:
        received.append(("object", list(items), threading.current_thread().name))


writer = Writer()
