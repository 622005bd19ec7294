"""Gating of observable callbacks: report only while wanted, never raise into the SDK."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.metrics import CallbackOptions, CallbackT, Observation

__all__ = ["Gate"]

_log = logging.getLogger("otelperf.runtime")


class Gate:
    """Observable callbacks that report only while ``open`` and never raise into the SDK.

    A callback that raises reports nothing and is logged once, and again only
    after it has worked in between. ``before`` runs ahead of each callback.
    """

    def __init__(self) -> None:
        self.open = False
        self.before: Callable[[], None] = lambda: None
        self._failed: set[str] = set()

    def wrap(self, name: str, callbacks: Sequence[CallbackT] | None) -> list[CallbackT]:
        """``callbacks`` made silent while closed and exception-free when open."""
        return [self._guard(name, cb) if callable(cb) else cb for cb in callbacks or ()]

    def _guard(
        self, name: str, callback: Callable[[CallbackOptions], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if not self.open:
                return ()
            try:
                self.before()
                # Drain here: the instrumentor's callbacks are generators, which would
                # otherwise raise later, inside the SDK, outside this try.
                observations = list(callback(options))
            except Exception:
                if name not in self._failed:
                    self._failed.add(name)
                    _log.warning("cannot read %s; it is not reported", name, exc_info=True)
                return ()
            self._failed.discard(name)
            return observations

        return observe
