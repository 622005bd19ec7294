"""The exceptions a batcher raises into the application."""

from __future__ import annotations

from otelperf._errors import OtelperfError

__all__ = ["BatcherClosedError", "BatcherError", "BatcherFullError"]


class BatcherError(OtelperfError):
    """A batcher could not start, or refused an item. The message names the batcher."""


class BatcherFullError(BatcherError):
    """``put`` found the queue full (``on_full: raise``, or ``block`` past ``block_timeout``).

    The item was not queued and is counted as dropped (reason ``queue_full``).
    """


class BatcherClosedError(BatcherError):
    """``put`` was called after the batcher was stopped; the item is counted as dropped."""


for _cls in (BatcherError, BatcherFullError, BatcherClosedError):
    _cls.__module__ = "otelperf"
