"""A circuit breaker: after repeated failures, skip the backend for a cool-down, then probe.

Closed: every call goes through; ``failures`` consecutive failures open it. Open:
calls are refused (the cache answers from the origin) until ``cooldown`` has passed;
then one call is let through as a probe (half-open). The probe's success closes the
breaker, its failure opens it for another cool-down. Plain attributes, no I/O, no
lock on the hot path: sync threads and async tasks share one breaker, and a rare
race only lets one extra probe through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Breaker"]

CLOSED, HALF_OPEN, OPEN = 0, 1, 2

_log = logging.getLogger("otelperf.cache")


class Breaker:
    """The breaker of one cache's Redis."""

    def __init__(
        self,
        name: str,
        *,
        failures: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = failures
        self.cooldown = cooldown
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened = 0
        """How many times the breaker opened (closed -> open, or a failed probe)."""
        self._opened_at = 0.0
        self._probe_at = 0.0

    def allow(self) -> bool:
        """Whether a call may go to the backend now (True for the probe once cooled down)."""
        state = self.state
        if state == CLOSED:
            return True
        now = self._clock()
        if state == OPEN:
            if now - self._opened_at < self.cooldown:
                return False
            self.state = HALF_OPEN
            self._probe_at = now
            return True
        # Half-open with a probe in flight: a probe that never reported (its caller
        # vanished) must not keep the breaker half-open forever.
        if now - self._probe_at >= self.cooldown:
            self._probe_at = now
            return True
        return False

    def success(self) -> None:
        """The backend answered."""
        self.failures = 0
        if self.state != CLOSED:
            self.state = CLOSED
            _log.warning("cache %r: Redis answers again; circuit breaker closed", self.name)

    def failure(self, reason: str) -> None:
        """The backend failed (refused, timed out, broke the connection)."""
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
            self.state = OPEN
            self._opened_at = self._clock()
            self.opened += 1
            _log.warning(
                "cache %r: circuit breaker open after %d failure(s) (last: %s); Redis is "
                "skipped for %gs, then probed; calls are answered by the origin meanwhile",
                self.name,
                self.failures,
                reason,
                self.cooldown,
            )

    def abandon(self) -> None:
        """A call let through was cancelled before it learned anything: allow a new probe."""
        if self.state == HALF_OPEN:
            self._probe_at = self._clock() - self.cooldown
