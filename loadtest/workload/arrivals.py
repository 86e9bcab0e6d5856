"""When an open-loop step's requests are due: seeded arrival processes."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["arrival_offsets_ns"]


def arrival_offsets_ns(
    rate: float,
    arrival: Literal["constant", "poisson"],
    *,
    count: int | None = None,
    duration_s: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Due times (ns from the step's start) of an open-loop step, sorted.

    ``count`` arrivals: constant spacing ``1/rate``, or exponential gaps (a Poisson process).
    ``duration_s``: ``round(rate * duration)`` arrivals in ``[0, duration)``: constant spacing, or,
    for Poisson, sorted uniform times (a Poisson process conditioned on its count, so a timed step
    sends exactly the expected number of requests).
    """
    rng = np.random.default_rng(seed)
    if count is None:
        if duration_s is None:
            raise ValueError("count or duration_s is required")
        n = round(rate * duration_s)
        offsets = np.arange(n) / rate if arrival == "constant" else np.sort(rng.uniform(0.0, duration_s, n))
    elif arrival == "constant":
        offsets = np.arange(count) / rate
    else:
        offsets = np.concatenate(([0.0], np.cumsum(rng.exponential(1.0 / rate, max(count - 1, 0)))))[:count]
    return (offsets * 1e9).astype(np.int64)
