"""Masking of secrets (URL passwords, conninfo passwords, sensitive headers) before display."""

from __future__ import annotations

import re

__all__ = ["MASK", "SENSITIVE_HEADERS", "redact_text"]

MASK = "****"

SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-otelperf-profile",
    }
)

# scheme://user:password@host -> scheme://user:****@host (the user stays: it helps debugging).
# The password runs to the last '@' before the path: clients such as redis-py split the
# netloc there, so a raw '@' in a password must not leave its tail visible.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*):([^\s/'\"]*)@")
# libpq key=value form and URL query parameters carrying secrets.
_KV_SECRET = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api_key|apikey|sslpassword)(\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'|[^\s&'\"]+)"
)


def redact_text(text: str) -> str:
    """Mask every URL password and ``password=...``-style value found in ``text``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    return _KV_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
