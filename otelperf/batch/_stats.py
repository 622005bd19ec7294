"""A snapshot of a batcher's counters."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BatcherStats"]


@dataclass(frozen=True)
class BatcherStats:
    """Counts since the batcher was built, taken at one instant.

    Every item offered to ``put``/``put_sync`` is in exactly one of ``written``,
    ``dead_lettered``, ``dropped`` or ``held`` (still queued or being written)::

        produced == written + dead_lettered + dropped + held

    ``retried`` counts items sent again after a failed attempt (a whole-batch retry
    or a split to isolate a poison item); it is an event count, not a final state.
    """

    produced: int
    written: int
    dead_lettered: int
    dropped: int
    queued: int
    in_flight: int
    retried: int
    dropped_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def held(self) -> int:
        """Items accepted and not yet resolved: waiting in the queue or being written."""
        return self.queued + self.in_flight

    @property
    def balanced(self) -> bool:
        """Whether the counts add up (they always should)."""
        return self.produced == self.written + self.dead_lettered + self.dropped + self.held
