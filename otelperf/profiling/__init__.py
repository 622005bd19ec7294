"""Profiling hooks: slow requests and functions caught with a profile attached.

``Profiling`` is the component (built from ``profiling:``); the HTTP middleware calls
its ``begin``/``end`` around each request and ``handle_endpoint`` for the profile
endpoint; ``perf.profile(hook)`` returns a :class:`Profiled`.
"""

from otelperf.profiling._functions import Profiled
from otelperf.profiling._profiling import (
    PROFILE_EVENT,
    PROFILE_ID_HEADER,
    ProfileSession,
    Profiling,
)

__all__ = ["PROFILE_EVENT", "PROFILE_ID_HEADER", "ProfileSession", "Profiled", "Profiling"]
