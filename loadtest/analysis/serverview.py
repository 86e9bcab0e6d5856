"""When a step's server view (``step["server"]``, analysis/servermetrics.py) can be read as its
queue and load. Its own module, without numpy: the terminal table and the headline import it."""

from __future__ import annotations

from typing import Any

__all__ = ["MIN_SCRAPES", "sampled"]

MIN_SCRAPES = 3  # scrapes inside a step before its time means say something: with fewer, the scrapes
# at its edges (its start and end, when little is in flight) are most of what is held


def sampled(server: dict[str, Any] | None) -> bool:
    """A step's server view rests on at least ``MIN_SCRAPES`` scrapes inside the step."""
    return bool(server) and (server or {}).get("scrapes", 0) >= MIN_SCRAPES
