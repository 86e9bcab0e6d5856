"""Baseline vs candidate: did capacity regress, or is it noise? Pure (a seeded generator).

For each step present in both runs (matched by mode and load value) and each metric, the relative
change ``candidate / baseline - 1`` gets a 95% confidence interval by bootstrap: both runs' values
are resampled with replacement and the statistic recomputed, ``resamples`` times.

The resampled unit is a time window, not a request (a block bootstrap). Requests in flight together
share what happens to them: one stall of the server, the network or the client delays all of them
at once, so the slow requests of one event are one observation, not several. Resampling them one by
one treats a single hiccup in the baseline as a reliable tail and calls the candidate "improved" (or
a hiccup in the candidate "regressed"). So each step is cut by completion time into windows one
median E2E long (at least MIN_WINDOWS of them) and whole windows are drawn. ITL's gaps are counted
without their times and are resampled one by one (multinomially); a stall is one gap per request
among some thirty.

Throughput (successful requests, or their output tokens, per second of the step) resamples windows
of every request, failed ones too, and fixes the side of Little's law the harness sets: a
closed-loop step fixes how many requests are in flight, so throughput = mean in flight x ok amount
/ time in flight of all requests (a timeout holds a slot for the whole timeout and delivers
nothing); an open-loop step fixes how often requests are sent, so throughput = send rate x ok
amount / requests (the share that succeeds carries the noise, not the latencies). Both equal the
summary's value (ok amount / duration) on the step's own windows. Resampling the successful
requests alone against the mean in flight of all of them estimated ok / duration x (time in flight
of all requests / of the successful ones): blind to failures in a closed loop (about concurrency /
mean E2E), too high in an open loop, with an interval that never saw the failures vary.

A metric *regressed* when the whole interval is worse than ``tolerance``, *improved* when the whole
interval is better, and is *unchanged* otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from loadtest.analysis.capacity import compare_capacity
from loadtest.analysis.metrics import StepAccumulator
from loadtest.analysis.stats import weighted_percentile
from loadtest.analysis.summary import Run, pick

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


MIN_WINDOWS = 8  # a step is cut into at least this many time windows (when it has that many values)


def _windows(at_ns: np.ndarray, e2e_ms: np.ndarray) -> np.ndarray:
    """Each value's time window, numbered 0..k-1 without gaps: windows one median E2E long (the
    requests one stall delays end within about that much of each other), at least MIN_WINDOWS a step."""
    span = float(at_ns.max() - at_ns.min())
    width = min(float(np.median(e2e_ms)) * 1e6, span / MIN_WINDOWS)
    if width <= 0:
        return np.arange(len(at_ns))
    return np.unique((at_ns - at_ns.min()) // width, return_inverse=True)[1]


def _draws(windows: int, rng: np.random.Generator, resamples: int) -> Iterator[np.ndarray]:
    """Per resample, how many times each of ``windows`` windows was drawn (``windows`` draws)."""
    for _ in range(resamples):
        yield np.bincount(rng.integers(0, windows, windows), minlength=windows)


def _throughput_samples(
    acc: StepAccumulator, summary: dict[str, Any], metric: str, rng: np.random.Generator, resamples: int
) -> np.ndarray:
    """Bootstrap values of a throughput: windows of all requests (failed ones too) by completion time;
    per window the successful requests' amount over the time in flight of all requests (closed loop:
    times the mean in flight) or over the number of requests (open loop: times the send rate)."""
    end = np.asarray(acc.end_ns)
    ok_at = np.asarray(acc.e2e_at)  # a successful request's end_ns, so also in ``end``
    amount = np.ones(len(ok_at)) if metric == "request_throughput" else np.asarray(acc.output_tokens)
    if not len(end) or len(amount) != len(ok_at) or summary["duration_s"] <= 0:
        return np.empty(0)
    e2e_ms = (end - np.asarray(acc.sent_ns)) / 1e6
    window = _windows(end, e2e_ms)
    order = np.argsort(end, kind="stable")
    ok_window = window[order][np.searchsorted(end[order], ok_at)]
    k = int(window.max()) + 1
    ok_amount = np.bincount(ok_window, amount, minlength=k)
    if summary["mode"] == "concurrency":
        fixed, per = summary["in_flight"]["mean"], np.bincount(window, e2e_ms / 1e3, minlength=k)
    else:
        fixed, per = summary["requests"]["sent"] / summary["duration_s"], np.bincount(window, minlength=k)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.array([fixed * (c @ ok_amount) / (c @ per) for c in _draws(k, rng, resamples)])


def _samples(
    acc: StepAccumulator, summary: dict[str, Any], metric: str, rng: np.random.Generator, resamples: int
) -> np.ndarray:
    """``resamples`` bootstrap values of ``metric`` for one step (an empty array when undefined)."""
    q = float(metric.rsplit(".p", 1)[1]) if ".p" in metric else 0.0
    if metric.startswith("itl_ms"):  # gaps are counted, not kept with their times: resampled one by one
        values, cum = acc.itl.values_cum()
        if not len(values):
            return np.empty(0)
        counts = np.diff(np.concatenate(([0], cum)))
        total = int(cum[-1])
        draws = (rng.multinomial(total, counts / total) for _ in range(resamples))
        return np.array([weighted_percentile(values, c, q) for c in draws]) / 1e3
    if metric in ("request_throughput", "output_token_throughput"):
        return _throughput_samples(acc, summary, metric, rng, resamples)
    e2e = np.asarray(acc.e2e)
    if not len(e2e):
        return np.empty(0)
    key = metric.split(".")[0]
    values, at = {
        "ttft_ms": (acc.ttft, acc.ttft_at),
        "tpot_ms": (acc.tpot, acc.tpot_at),
        "e2e_ms": (acc.e2e, acc.e2e_at),
    }[key]
    if not len(values):
        return np.empty(0)
    window = _windows(np.asarray(at), e2e)
    order = np.argsort(np.asarray(values), kind="stable")
    ordered, window = np.asarray(values)[order], window[order]
    k = int(window.max()) + 1
    return np.array([weighted_percentile(ordered, c[window], q) for c in _draws(k, rng, resamples)])


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
            b_val, c_val = pick(base, metric), pick(cand, metric)
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
    capacity = compare_capacity(baseline.summary.get("capacity"), candidate.summary.get("capacity"), tolerance)
    if capacity is not None:
        rows.insert(0, capacity)
    return {
        "baseline": str(baseline.run_dir),
        "candidate": str(candidate.run_dir),
        "tolerance": tolerance,
        "resamples": resamples,
        "seed": seed,
        "rows": rows,
        # two capacity searches: the capacity decides (a step past capacity regresses on noise alone)
        "regressed": [r for r in rows if r["verdict"] == "regressed" and (capacity is None or r is capacity)],
        "passed": not any(r["verdict"] == "regressed" for r in rows if capacity is None or r is capacity),
    }
