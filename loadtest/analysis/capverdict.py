"""How sure a capacity step's verdict is: a block-bootstrap interval of each latency SLO's percentile.

Pure. The runs of the search at one load are pooled (``LoadPool``): a near-boundary step that was
run again, longer, is judged on all its requests. Each run is cut by send time into ``BLOCKS``
equal windows and whole windows are resampled, as analysis/compare.py's window bootstrap does
(requests in flight together share one queue: one busy period is one observation, not many);
the windows are wider here than compare's one median E2E, because a queue near capacity stays
long for many E2Es. The percentile of each resample comes from stats.weighted_percentile.

A verdict is *sure* when the interval lies wholly on one side of the bound. The interval only sees
what the step saw: a short step near capacity that missed a long busy period looks surely fine
(the tail of a queue's wait is bursty), so the search lengthens uncertain steps and treats a step
that stays uncertain as not passing (analysis/capacity.py).
"""

from __future__ import annotations

import numpy as np

from loadtest.analysis.metrics import StepAccumulator
from loadtest.analysis.stats import weighted_percentile

__all__ = ["BLOCKS", "LEVEL", "LoadPool", "block_percentile_interval"]

BLOCKS = 10  # windows a run is cut into
LEVEL = 0.90  # two-sided: each side is a 95% one-sided bound
RESAMPLES = 400
_SAMPLED = ("ttft_ms", "tpot_ms", "e2e_ms")  # latencies kept per request with their times


def block_percentile_interval(
    values: np.ndarray, block: np.ndarray, q: float, rng: np.random.Generator, resamples: int = RESAMPLES
) -> tuple[float, float]:
    """(low, high) of the ``LEVEL`` bootstrap interval of the ``q``-th percentile of ``values``, each
    value in window ``block[i]`` (0..k-1); whole windows are drawn with replacement."""
    order = np.argsort(values, kind="stable")
    ordered, block = values[order], block[order]
    k = int(block.max()) + 1
    stats = []
    for _ in range(resamples):
        counts = np.bincount(rng.integers(0, k, k), minlength=k)[block]
        if counts.sum():
            stats.append(weighted_percentile(ordered, counts, q))
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(stats, (tail, 100 - tail))
    return float(lo), float(hi)


class LoadPool:
    """The per-request latencies (and send-ordered windows) of every run at one load."""

    def __init__(self, load: float) -> None:
        self.load = load
        self.runs = 0
        self.values: dict[str, list[np.ndarray]] = {k: [] for k in _SAMPLED}
        self.blocks: dict[str, list[np.ndarray]] = {k: [] for k in _SAMPLED}

    def add(self, acc: StepAccumulator) -> None:
        """One more run at this load (its accumulator)."""
        sent = np.asarray(acc.sent_ns)
        for key, (vals, at) in {
            "ttft_ms": (acc.ttft, acc.ttft_at),
            "tpot_ms": (acc.tpot, acc.tpot_at),
            "e2e_ms": (acc.e2e, acc.e2e_at),
        }.items():
            v, t = np.asarray(vals, dtype=float), np.asarray(at, dtype=np.int64)
            if len(sent) and len(t):
                span = max(int(sent.max() - sent.min()), 1)
                b = np.clip((t - sent.min()) * BLOCKS // span, 0, BLOCKS - 1) + self.runs * BLOCKS
            else:
                b = np.empty(0, np.int64)
            self.values[key].append(v)
            self.blocks[key].append(b.astype(np.int64))
        self.runs += 1

    def sampled(self, metric: str, stat: str) -> bool:
        """Whether ``stat`` of ``metric`` is a percentile of per-request values kept here."""
        return metric in _SAMPLED and stat.startswith("p") and stat[1:].replace(".", "").isdigit()

    def interval(self, metric: str, stat: str) -> tuple[float, float, float] | None:
        """(point, low, high) of ``metric``'s ``stat`` (``pNN``) over the pooled runs, or None when it
        is not a sampled percentile or has too few values."""
        if not self.sampled(metric, stat):
            return None
        values = np.concatenate(self.values[metric]) if self.values[metric] else np.empty(0)
        if len(values) < 2 * BLOCKS:
            return None
        blocks = np.unique(np.concatenate(self.blocks[metric]), return_inverse=True)[1]
        q = float(stat[1:])
        rng = np.random.default_rng([round(self.load * 1000), self.runs, len(values)])
        lo, hi = block_percentile_interval(values, blocks, q, rng)
        return float(np.percentile(values, q)), lo, hi


def sure(point: float, lo: float, hi: float, bound: float, kind: str) -> tuple[float, bool]:
    """(margin of the point estimate as a share of the bound, > 0 fails; whether the interval lies
    wholly on one side of the bound)."""
    scale = bound or 1e-12
    margin = (point - bound) / scale if kind == "max" else (bound - point) / scale
    return margin, hi <= bound or lo > bound


def describe(ci: tuple[float, float, float] | None) -> list[float] | None:
    return None if ci is None else [round(ci[1], 3), round(ci[2], 3)]
