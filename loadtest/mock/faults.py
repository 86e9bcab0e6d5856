"""Faults the mock can inject, and which request gets one.

With rates summing to ``R``, request ``k`` (1-based, in arrival order) is faulted when
``floor(k * R)`` increases, and each fault goes to the kind furthest behind its share. Evenly spread
and exact: N requests see ``floor(N * r)`` faults of a single kind at rate r (within 1 when kinds
are mixed), so a test can assert the exact split of ok and failed records.
"""

from __future__ import annotations

import math

from loadtest.config.faults import EXPECTED_CLASS, FAULTS

__all__ = ["EXPECTED_CLASS", "FAULTS", "FaultPlan"]


def _steps_up(n: int, rate: float) -> bool:
    return math.floor(n * rate + 1e-9) > math.floor((n - 1) * rate + 1e-9)


class FaultPlan:
    """Which request gets which fault: request k (1-based) is faulted when ``floor(k * R)`` steps
    up (``R`` the sum of the rates); the fault goes to the kind furthest behind its share."""

    def __init__(self, rates: dict[str, float]) -> None:
        self.rates = [(kind, r) for kind, r in rates.items() if r > 0]
        self.total = sum(r for _, r in self.rates)
        self.k = 0
        self.assigned = {kind: 0 for kind, _ in self.rates}

    def next(self) -> str | None:
        """The fault of the next request, or None."""
        self.k += 1
        if not self.rates or not _steps_up(self.k, self.total):
            return None
        n = math.floor(self.k * self.total + 1e-9)  # this request gets the n-th fault
        kind = max(self.rates, key=lambda kr: n * kr[1] / self.total - self.assigned[kr[0]])[0]
        self.assigned[kind] += 1
        return kind
