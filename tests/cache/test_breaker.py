"""The circuit breaker's states, on a clock the test moves."""

from __future__ import annotations

import logging

import pytest

from otelperf.cache._breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_then_probes_and_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """N failures open it; after the cool-down one probe goes through; success closes it."""
    clock = Clock()
    breaker = Breaker("c", failures=3, cooldown=5.0, clock=clock)
    with caplog.at_level(logging.WARNING, "otelperf.cache"):
        for _ in range(2):
            breaker.failure("timeout")
        assert breaker.allow()
        assert breaker.state == CLOSED
        breaker.failure("timeout")
        assert breaker.state == OPEN
        assert not breaker.allow()
        clock.now = 5.0
        assert breaker.allow()
        assert breaker.state == HALF_OPEN
        assert not breaker.allow()  # one probe at a time
        breaker.success()
    assert breaker.state == CLOSED
    assert breaker.allow()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "open after 3" in messages[0]
    assert "closed" in messages[1]


def test_a_success_resets_the_count_and_a_failed_probe_reopens() -> None:
    """Failures must be consecutive; a failed probe opens for another cool-down."""
    clock = Clock()
    breaker = Breaker("c", failures=2, cooldown=1.0, clock=clock)
    breaker.failure("x")
    breaker.success()
    breaker.failure("x")
    assert breaker.state == CLOSED
    breaker.failure("x")
    clock.now = 1.0
    assert breaker.allow()
    breaker.failure("x")
    assert breaker.state == OPEN
    assert breaker.opened == 2
    clock.now = 1.5
    assert not breaker.allow()


def test_an_abandoned_probe_lets_the_next_call_probe() -> None:
    """A probe whose caller was cancelled does not keep the breaker half-open."""
    clock = Clock()
    breaker = Breaker("c", failures=1, cooldown=1.0, clock=clock)
    breaker.failure("x")
    clock.now = 1.0
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()
