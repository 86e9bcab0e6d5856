"""Rate-limit headers, read in the two dialects providers use. Pure functions.

OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets as durations
(``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``). Cerebras: ``x-ratelimit-limit-requests-day``,
``-limit-tokens-minute``, ``-remaining-requests-day``, ``-remaining-tokens-minute``,
``-reset-requests-day``, ``-reset-tokens-minute``, resets in float seconds.
Both become one shape: ``{"requests": {...}, "tokens": {...}}`` with ``limit``, ``remaining``,
``reset_s`` and the ``window`` the limit is over (``minute`` or ``day``); ``parse_ratelimit_windows``
keeps every window (Cerebras may advertise a kind per minute and per day).
A 429's message names the limit that refused it (OpenAI: "Rate limit reached for gpt-4o in
organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try
again in 2.5s."): ``limit_named`` reads it, for endpoints that send no rate-limit headers.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = [
    "format_duration",
    "limit_named",
    "parse_duration",
    "parse_ratelimit",
    "parse_ratelimit_windows",
    "retry_after_s",
]

_UNIT = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float | None:
    """``6m0s`` -> 360.0, ``20ms`` -> 0.02, ``1.5`` (bare seconds) -> 1.5; None when unreadable."""
    text = text.strip()
    try:
        value = float(text)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos else None


def format_duration(seconds: float) -> str:
    """OpenAI's way of writing a reset: ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    s = round(seconds, 3)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    sec_text = f"{sec:.3f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{sec_text}"
    return f"{int(m)}m{sec_text}" if m else sec_text


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_ratelimit(headers: dict[str, str] | None) -> dict[str, dict[str, Any]]:
    """The limits a response advertised, in one shape whatever the dialect; {} when none."""
    if not headers:
        return {}
    h = {k.lower(): v for k, v in headers.items()}
    out: dict[str, dict[str, Any]] = {}
    for kind in ("requests", "tokens"):
        if f"x-ratelimit-limit-{kind}" in h or f"x-ratelimit-remaining-{kind}" in h:  # OpenAI
            reset = h.get(f"x-ratelimit-reset-{kind}")
            out[kind] = {
                "limit": _number(h.get(f"x-ratelimit-limit-{kind}")),
                "remaining": _number(h.get(f"x-ratelimit-remaining-{kind}")),
                "reset_s": parse_duration(reset) if reset is not None else None,
                "window": "minute",
            }
            continue
        for window in ("minute", "day"):  # Cerebras
            if f"x-ratelimit-limit-{kind}-{window}" in h or f"x-ratelimit-remaining-{kind}-{window}" in h:
                out[kind] = {
                    "limit": _number(h.get(f"x-ratelimit-limit-{kind}-{window}")),
                    "remaining": _number(h.get(f"x-ratelimit-remaining-{kind}-{window}")),
                    "reset_s": _number(h.get(f"x-ratelimit-reset-{kind}-{window}")),
                    "window": window,
                }
                break
    return out


def parse_ratelimit_windows(headers: dict[str, str] | None) -> dict[tuple[str, str], dict[str, Any]]:
    """Every advertised limit by (kind, window), e.g. ``("requests", "day")``; {} when none."""
    if not headers:
        return {}
    h = {k.lower(): v for k, v in headers.items()}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in ("requests", "tokens"):
        for suffix, window in ((kind, "minute"), (f"{kind}-minute", "minute"), (f"{kind}-day", "day")):
            if f"x-ratelimit-limit-{suffix}" not in h and f"x-ratelimit-remaining-{suffix}" not in h:
                continue
            reset = h.get(f"x-ratelimit-reset-{suffix}")
            out[(kind, window)] = {
                "limit": _number(h.get(f"x-ratelimit-limit-{suffix}")),
                "remaining": _number(h.get(f"x-ratelimit-remaining-{suffix}")),
                "reset_s": parse_duration(reset) if reset is not None else None,
                "window": window,
            }
    return out


_NAMED = re.compile(r"\bon (requests|tokens) per (min|day)\b", re.IGNORECASE)


def limit_named(message: str | None) -> tuple[str, str] | None:
    """(kind, window) of the limit a 429's message names (OpenAI's wording), else None."""
    m = _NAMED.search(message or "")
    return (m.group(1).lower(), "minute" if m.group(2).lower() == "min" else "day") if m else None


def retry_after_s(headers: dict[str, str] | Any) -> float | None:
    """How long a 429 (or 503) asks the client to wait: ``retry-after-ms`` when sent (OpenAI
    sends it, more precise), else ``retry-after`` in seconds (an HTTP date is not supported)."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None and ms >= 0:
        return ms / 1000
    s = _number(headers.get("retry-after"))
    return s if s is not None and s >= 0 else None
