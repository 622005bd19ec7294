"""The dead-letter file: items that could not be written, one JSON line each, with the error.

Each line is a JSON object you can replay from::

    {"batcher": "events", "time": "2026-05-09T07:35:25.123456+00:00",
     "reason": "rejected", "attempts": 1, "error_type": "psycopg.errors.CheckViolation",
     "error": "CheckViolation: new row for relation ... violates check constraint ...",
     "item": [37, -1]}

``reason`` is ``rejected`` (the sink refused this item: a poison item, isolated),
``retries_exhausted`` (the sink kept failing) or ``shutdown`` (not written by the
shutdown deadline). The file is opened with ``O_APPEND`` and each batch of lines
goes out in one ``write``, so several worker processes can share one file.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Sequence
from typing import Any

from otelperf._redact import redact_text
from otelperf.batch._errors import BatcherError
from otelperf.batch._json import dumps_lenient

__all__ = ["DeadLetterFile", "describe_error", "unwritable"]

_log = logging.getLogger("otelperf.batch")
_MAX_ERROR = 2000


def describe_error(error: BaseException | None) -> tuple[str | None, str | None]:
    """``(qualified type, "Type: message")`` of ``error``, secrets masked, length bounded."""
    if error is None:
        return None, None
    kind = type(error)
    qualified = f"{kind.__module__}.{kind.__qualname__}"
    try:
        message = str(error)
    except Exception:  # a broken __str__ must not lose the item
        message = "<str() failed>"
    text = redact_text(f"{kind.__name__}: {message}" if message else kind.__name__)
    return qualified, text[:_MAX_ERROR]


def unwritable(path: str) -> str | None:
    """Why ``path`` could not be opened for appending (without creating it), or None."""
    if os.path.isdir(path):
        return "is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "is not writable"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"cannot be created: the directory {parent!r} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: the directory {parent!r} is not writable"
    return None


def open_append(path: str) -> int:
    """A descriptor appending to ``path`` (created 0644 when missing); OSError if it cannot."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, however many writes that takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class DeadLetterFile:
    """Appends failed items to a JSON-lines file; never raises once opened."""

    def __init__(self, path: str | os.PathLike[str], *, batcher: str) -> None:
        self.path = os.fspath(path)
        self.batcher = batcher
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<DeadLetterFile {self.path!r} of batcher {self.batcher!r}>"

    def open(self) -> None:
        """Open for appending (creating it); a BatcherError says why it cannot be."""
        if self._fd is not None:
            return
        try:
            self._fd = open_append(self.path)
        except OSError as exc:
            raise BatcherError(
                f"batcher {self.batcher!r}: cannot open its dead-letter file {self.path!r}: "
                f"{exc.strerror or exc}; fix batchers.{self.batcher}.dead_letter.path "
                "(relative paths are from the working directory) or the directory's permissions"
            ) from None

    def check(self) -> None:
        """Raise BatcherError unless the file could be appended to; creates nothing."""
        problem = unwritable(self.path)
        if problem is not None:
            raise BatcherError(
                f"batcher {self.batcher!r}: its dead-letter file {self.path!r} {problem}; fix "
                f"batchers.{self.batcher}.dead_letter.path or the directory's permissions"
            )

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def write(
        self,
        items: Sequence[Any],
        *,
        error: BaseException | None,
        reason: str,
        attempts: int,
    ) -> bool:
        """Append one line per item; False (logged) if the file could not take them."""
        error_type, error_text = describe_error(error)
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
        head = {
            "batcher": self.batcher,
            "time": stamp,
            "reason": reason,
            "attempts": attempts,
            "error_type": error_type,
            "error": error_text,
        }
        try:
            data = "".join(dumps_lenient({**head, "item": item}) + "\n" for item in items)
            self._write_all(data.encode("utf-8", "backslashreplace"))
        except Exception as exc:
            _log.error(
                "batcher %r: could not write %d item(s) to the dead-letter file %r: %s; "
                "they are counted as dropped (reason undeliverable)",
                self.batcher, len(items), self.path, exc,
            )  # fmt: skip
            return False
        return True

    def _write_all(self, data: bytes) -> None:
        if self._fd is None:  # used before start or after stop: open on demand
            self.open()
        fd = self._fd
        if fd is None:  # pragma: no cover - open() raises instead
            raise OSError("dead-letter file is not open")
        write_all(fd, data)
