"""Baseline vs candidate: did capacity regress, or is it noise? Pure (a seeded generator).

For each step present in both runs (matched by mode and load value) and each metric, the relative
change ``candidate / baseline - 1`` gets a 95% confidence interval by bootstrap: both runs'
per-request values are resampled with replacement (ITL: its gap histogram, resampled
multinomially) and the statistic recomputed, ``resamples`` times. Throughput is resampled through
Little's law (throughput = mean requests in flight x requests / sum of their latencies), so its
interval reflects the latency noise that moves it. A metric *regressed* when the whole interval is
worse than ``tolerance``, *improved* when the whole interval is better, and is *unchanged* otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import StepAccumulator
from .results import Run

__all__ = ["METRICS", "compare_runs"]

# name -> (what it is, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "request_throughput": ("requests/s", True),
    "output_token_throughput": ("output tokens/s", True),
    "ttft_ms.p50": ("TTFT p50", False),
    "ttft_ms.p99": ("TTFT p99", False),
    "tpot_ms.p50": ("TPOT p50", False),
    "tpot_ms.p99": ("TPOT p99", False),
    "itl_ms.p50": ("ITL p50", False),
    "itl_ms.p99": ("ITL p99", False),
    "e2e_ms.p50": ("E2E p50", False),
    "e2e_ms.p99": ("E2E p99", False),
}


def _samples(
    acc: StepAccumulator, summary: dict[str, Any], metric: str, rng: np.random.Generator, resamples: int
) -> np.ndarray:
    """``resamples`` bootstrap values of ``metric`` for one step (an empty array when undefined)."""
    if metric.startswith("itl_ms"):
        values, cum = acc.itl.values_cum()
        if not len(values):
            return np.empty(0)
        counts = np.diff(np.concatenate(([0], cum)))
        q = float(metric.rsplit("p", 1)[1])
        out = np.empty(resamples)
        for b in range(resamples):
            c = np.cumsum(rng.multinomial(int(cum[-1]), counts / cum[-1]))
            out[b] = values[np.searchsorted(c, int((cum[-1] - 1) * q / 100), side="right")] / 1e3
        return out
    if metric in ("request_throughput", "output_token_throughput"):
        e2e = np.asarray(acc.e2e)
        tokens = np.asarray(acc.output_tokens)
        if not len(e2e) or len(tokens) != len(e2e):
            return np.empty(0)
        in_flight = summary["in_flight"]["mean"]
        idx = rng.integers(0, len(e2e), size=(resamples, len(e2e)))
        amount = len(e2e) if metric == "request_throughput" else tokens[idx].sum(axis=1)
        return in_flight * amount / (e2e[idx].sum(axis=1) / 1e3)
    key, pct = metric.split(".")
    values = np.asarray({"ttft_ms": acc.ttft, "tpot_ms": acc.tpot, "e2e_ms": acc.e2e}[key])
    if not len(values):
        return np.empty(0)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    return np.percentile(values[idx], float(pct[1:]), axis=1)


def _value(summary: dict[str, Any], metric: str) -> float | None:
    node: Any = summary
    for part in metric.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def compare_runs(
    baseline: Run, candidate: Run, *, tolerance: float = 0.05, resamples: int = 400, seed: int = 0
) -> dict[str, Any]:
    """compare.json's content: every matched step and metric, with its change, interval and verdict."""
    rng = np.random.default_rng(seed)
    base_steps = {(s["mode"], s["value"]): s for s in baseline.summary["steps"]}
    rows = []
    for cand in candidate.summary["steps"]:
        base = base_steps.get((cand["mode"], cand["value"]))
        if base is None or base["index"] not in baseline.steps or cand["index"] not in candidate.steps:
            continue
        for metric, (label, higher_better) in METRICS.items():
            b_val, c_val = _value(base, metric), _value(cand, metric)
            if not b_val or c_val is None:
                continue
            b = _samples(baseline.steps[base["index"]], base, metric, rng, resamples)
            c = _samples(candidate.steps[cand["index"]], cand, metric, rng, resamples)
            if not len(b) or not len(c) or not np.all(b > 0):
                continue
            ratio = c / b - 1
            lo, hi = (float(x) for x in np.percentile(ratio, [2.5, 97.5]))
            worse_lo, worse_hi = (-hi, -lo) if higher_better else (lo, hi)  # positive = worse
            verdict = "regressed" if worse_lo > tolerance else "improved" if worse_hi < -tolerance else "unchanged"
            rows.append(
                {
                    "mode": cand["mode"],
                    "value": cand["value"],
                    "metric": metric,
                    "label": label,
                    "higher_is_better": higher_better,
                    "baseline": b_val,
                    "candidate": c_val,
                    "change": c_val / b_val - 1,
                    "ci95": [lo, hi],
                    "verdict": verdict,
                }
            )
    return {
        "baseline": str(baseline.run_dir),
        "candidate": str(candidate.run_dir),
        "tolerance": tolerance,
        "resamples": resamples,
        "seed": seed,
        "rows": rows,
        "regressed": [r for r in rows if r["verdict"] == "regressed"],
        "passed": not any(r["verdict"] == "regressed" for r in rows),
    }
