"""Distributions of a step's values: the percentiles every summary reports. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.ma  # np.percentile's first call imports it (numpy 2, via np.unique): not mid-run

__all__ = ["PERCENTILES", "distribution", "weighted_percentile"]

PERCENTILES = (50, 90, 95, 99)


def _stddev(a: np.ndarray, mean: float) -> float:
    """Population standard deviation, in float64 but a million values at a time (no full-size temporary)."""
    step = 1 << 20
    acc = 0.0
    for i in range(0, a.size, step):
        d = a[i : i + step].astype(np.float64) - mean
        acc += float(d @ d)
    return math.sqrt(acc / a.size)


def distribution(values: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """mean, stddev (population), p50/p90/p95/p99 (linear interpolation) and max; None when empty."""
    a = np.asarray(values)
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    keys = ["mean", "stddev", *(f"p{p}" for p in PERCENTILES), "max"]
    if a.size == 0:
        return dict.fromkeys(keys)
    mean = float(a.mean(dtype=np.float64))
    std = _stddev(a, mean)
    top = float(a.max())
    pct = np.percentile(a, PERCENTILES)
    return {
        "mean": mean,
        "stddev": std,
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
        "max": top,
    }


def weighted_percentile(sorted_values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """``np.percentile(x, q)`` (linear interpolation) of the multiset holding ``sorted_values[i]``
    ``counts[i]`` times, without building it: a histogram's or a bootstrap resample's percentile."""
    cum = np.cumsum(counts)
    pos = (cum[-1] - 1) * q / 100
    lo = int(pos)
    a = sorted_values[np.searchsorted(cum, lo, side="right")]
    b = sorted_values[np.searchsorted(cum, min(lo + 1, cum[-1] - 1), side="right")]
    return float(a + (b - a) * (pos - lo))
