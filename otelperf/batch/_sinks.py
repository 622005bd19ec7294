"""Where batches go: the :class:`Sink` interface, a Python callable, a JSON-lines file.

A sink is any object with ``async write(items)``; it raises to say the batch was not
written. Optional methods refine how the batcher treats it:

- ``async open()`` / ``async close()``: called at the batcher's start and stop;
- ``is_item_error(error) -> bool``: True when ``error`` means the *data* is at fault
  (the batch is then split to isolate the poison item) rather than the sink being
  unavailable (the batch is then retried whole). Default: :func:`default_is_item_error`;
- ``async ping()``: reach the backing service once (``otelperf check --connect``);
- ``kind``: a short label for telemetry (``otelperf.batch.sink``), default ``custom``;
- ``cancellable``: False when an abandoned ``write`` keeps running (a thread), so
  the batcher must not time it out and send the same items again. Default True.

The PostgreSQL ``COPY`` sink lives in :mod:`otelperf.batch._postgres`.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from otelperf.batch._deadletter import open_append, unwritable, write_all
from otelperf.batch._errors import BatcherError
from otelperf.batch._json import dumps_item

__all__ = [
    "FunctionSink",
    "JsonlFileSink",
    "Sink",
    "default_is_item_error",
    "sink_kind",
]


@runtime_checkable
class Sink(Protocol):
    """Receives whole batches. Raise from ``write`` when the batch was not written.

    >>> class PrintSink:
    ...     kind = "print"
    ...     async def write(self, items: list) -> None:
    ...         print(len(items), "items")
    """

    async def write(self, items: list[Any]) -> None:
        """Write every item of ``items``, or raise (nothing, or everything, is kept)."""


def default_is_item_error(error: BaseException) -> bool:
    """Errors that usually mean an item is bad, not the sink: encoding and lookup errors."""
    return isinstance(error, (ValueError, TypeError, LookupError)) and not isinstance(
        error, (TimeoutError, ConnectionError)
    )


def sink_kind(sink: object) -> str:
    """The sink's ``kind`` label (low-cardinality), ``custom`` when it has none."""
    kind = getattr(sink, "kind", None)
    return kind if isinstance(kind, str) and kind else "custom"


class FunctionSink:
    """Calls a function with each batch (a list); async functions are awaited, sync ones
    run in a worker thread so the event loop keeps serving requests.

    ``target`` is the function, or its import path ``package.module:function``,
    imported at ``open()`` (the batcher's start), when the application's modules
    are all imported.
    """

    kind = "callable"

    def __init__(self, target: str | Callable[[list[Any]], Any], *, batcher: str = "") -> None:
        self.batcher = batcher
        self.target = target
        self._fn: Callable[[list[Any]], Any] | None = None
        self._is_async = False
        if callable(target):
            self._bind(target)

    def __repr__(self) -> str:
        return f"<FunctionSink {self._describe()}>"

    def _describe(self) -> str:
        if isinstance(self.target, str):
            return self.target
        return getattr(self.target, "__qualname__", repr(self.target))

    @property
    def cancellable(self) -> bool:
        """A sync function keeps running in its thread when abandoned: never time it out."""
        return self._is_async

    def _bind(self, fn: Callable[[list[Any]], Any]) -> None:
        self._fn = fn
        # A function, or an object whose class defines ``async def __call__``.
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            type(fn).__call__
        )

    async def open(self) -> None:
        if self._fn is None:
            self._bind(self._resolve())

    async def ping(self) -> None:
        await self.open()

    def _resolve(self) -> Callable[[list[Any]], Any]:
        path = str(self.target)
        module_name, _, qualname = path.partition(":")
        where = f"batchers.{self.batcher}.sink.callable.path" if self.batcher else "the sink"
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise BatcherError(
                f"batcher {self.batcher!r}: cannot import its sink {path!r}: "
                f"{type(exc).__name__}: {exc}; fix {where}"
            ) from None
        if not callable(obj):
            raise BatcherError(
                f"batcher {self.batcher!r}: its sink {path!r} is a {type(obj).__name__}, "
                f"not a function; fix {where}"
            )
        fn: Callable[[list[Any]], Any] = obj
        return fn

    async def write(self, items: list[Any]) -> None:
        fn = self._fn
        if fn is None:
            await self.open()
            fn = self._fn
            if fn is None:  # pragma: no cover - open() binds or raises
                raise BatcherError("sink function not resolved")
        if self._is_async:
            await fn(items)
            return
        result = await asyncio.to_thread(fn, items)
        if inspect.isawaitable(result):  # e.g. a partial of an async function
            await result

    is_item_error = staticmethod(default_is_item_error)


class JsonlFileSink:
    """Appends each item as one JSON line to a file (``O_APPEND``, one ``write`` per batch).

    Items are encoded with :func:`json.dumps`, plus datetimes, dates, UUIDs,
    decimals, paths, sets, bytes (base64) and dataclasses; an item that cannot be
    encoded is isolated and dead-lettered while its batch-mates are written.
    """

    kind = "jsonl"

    def __init__(self, path: str | os.PathLike[str], *, batcher: str = "") -> None:
        self.path = os.fspath(path)
        self.batcher = batcher
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<JsonlFileSink {self.path!r}>"

    @property
    def _where(self) -> str:
        """The config key an error about this file points at."""
        return f"batchers.{self.batcher}.sink.jsonl.path" if self.batcher else "the path"

    async def open(self) -> None:
        if self._fd is not None:
            return
        try:
            self._fd = open_append(self.path)
        except OSError as exc:
            raise BatcherError(
                f"batcher {self.batcher!r}: cannot open its jsonl sink file {self.path!r}: "
                f"{exc.strerror or exc}; fix {self._where} or the directory's permissions"
            ) from None

    async def ping(self) -> None:
        """Raise BatcherError unless the file could be appended to; creates nothing."""
        problem = unwritable(self.path)
        if problem is not None:
            raise BatcherError(
                f"batcher {self.batcher!r}: its jsonl sink file {self.path!r} {problem}; "
                f"fix {self._where} or the directory's permissions"
            )

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    async def write(self, items: list[Any]) -> None:
        # Encode everything first: a poison item fails the batch before a byte is written.
        data = "".join([dumps_item(item) + "\n" for item in items]).encode("utf-8")
        if self._fd is None:
            await self.open()
        fd = self._fd
        if fd is None:  # pragma: no cover - open() sets it or raises
            raise OSError("jsonl sink file is not open")
        write_all(fd, data)

    is_item_error = staticmethod(default_is_item_error)
