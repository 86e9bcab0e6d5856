"""A step's connection phases and connection reuse, from its records. Pure.

Every measured attempt counts, failed ones included, for the phases it got through (a request
refused at connect has a queue time and nothing after it). ``connect_ms`` and ``tls_ms`` exist only
for requests that opened a new connection, so their percentiles describe handshakes, not a mix of
handshakes and zeros; ``connections`` says how often a connection was reused.
"""

from __future__ import annotations

from array import array
from typing import Any

from loadtest.analysis.records import RequestRecord
from loadtest.analysis.stats import distribution

__all__ = ["PHASES", "ConnectionStats"]

PHASES = ("queue_ms", "connect_ms", "tls_ms", "request_ms", "ttfb_ms")


class ConnectionStats:
    def __init__(self) -> None:
        self.values = {name: array("d") for name in PHASES}
        self.new = self.reused = 0

    def add(self, r: RequestRecord) -> None:
        for name, values in self.values.items():
            if (v := getattr(r, name)) is not None:
                values.append(v)
        if r.new_connection is not None:
            self.new += r.new_connection
            self.reused += not r.new_connection

    def summary(self) -> dict[str, Any]:
        """``phases_ms``: a distribution per phase (None when no request went through it);
        ``connections``: new, reused, and ``reuse_ratio`` = reused / (new + reused)."""
        total = self.new + self.reused
        return {
            "phases_ms": {name: distribution(v) if v else None for name, v in self.values.items()},
            "connections": {
                "new": self.new,
                "reused": self.reused,
                "reuse_ratio": self.reused / total if total else None,
            },
        }
