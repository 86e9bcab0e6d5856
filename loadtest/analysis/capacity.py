"""Capacity under SLO: the highest load (open-loop rate or concurrency) at which every SLO holds.

Pure: the search (``CapacitySearch``: grow by ``growth`` from ``start`` while steps pass, fall
while they fail, then bisect geometrically to ``tolerance``), one step's verdict from its summary
(``step_verdict``), the over-saturation detector (``SaturationWatch``: in-flight rising while
completions lag the send rate, or the server's waiting gauge growing, so a step past capacity ends
in seconds), and the summary's ``capacity`` from the steps that ran (``capacity_result``). The
planner (engine/planner.py) runs the search; the driver feeds the watch live and records its reason
with the step; the summary replays the in-flight watch on the records of steps that lack one.

A step whose verdict is unsure (a latency percentile's bootstrap interval straddles the bound:
analysis/capverdict.py) is run again at the same load, twice as long as its last run, up to
``lengthen`` times, and judged on all its runs pooled; one still unsure then goes by its point
estimates, and the reported interval spans it: from the highest load that surely passed to the
lowest that surely failed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from loadtest.analysis.capverdict import LoadPool, describe, sure
from loadtest.analysis.checks import evaluate_slos
from loadtest.analysis.metrics import StepAccumulator
from loadtest.config.scenario import Capacity, Scenario

__all__ = [
    "CapacitySearch",
    "SaturationWatch",
    "capacity_result",
    "compare_capacity",
    "floor_verdict",
    "oversaturation",
    "passed",
    "pooled_verdicts",
    "queue_growing",
    "step_verdict",
]

# over-saturation: judged over the last WINDOW_S of samples taken every SAMPLE_S, from MIN_S into the step
SAMPLE_S, WINDOW_S, MIN_S = 0.25, 5.0, 2.5
PERSIST_S = 1.0  # ...and the signal must hold at every check for this long (a Poisson burst passes)
SLOPE_SHARE = 0.3  # in-flight growing by at least this share of the send rate, per second...
COMPLETION_SHARE = 0.8  # ...while completions stay under this share of it
MIN_RISE = 8  # ...by at least this many requests over the window
WAITING_SHARE = 0.15  # the server's waiting gauge growing by this share of the send rate per second


class SaturationWatch:
    """Sends and completions of one open-loop step at ``rate`` req/s, times in seconds from its start;
    ``waiting``: the server's waiting-requests gauge as (seconds from the step's start, value), read
    when the step is checked (its scrapes, when server metrics are on)."""

    def __init__(self, rate: float, waiting: Callable[[], list[tuple[float, float]]] | None = None) -> None:
        self.rate = rate
        self.sends: list[float] = []
        self.dones: list[float] = []
        self.waiting = waiting
        self.reason: str | None = None
        self._checked = -math.inf
        self._since: float | None = None  # when the in-flight signal started to hold
        self._waiting_since: float | None = None  # ...the server's queue signal

    def send(self, t: float) -> None:
        self.sends.append(t)

    def done(self, t: float) -> None:
        bisect.insort(self.dones, t)

    def check(self, now: float) -> str | None:
        """Why the step is over-saturated (and when), or None; at most one evaluation per SAMPLE_S."""
        if self.reason is not None or now < MIN_S or now - self._checked < SAMPLE_S:
            return self.reason
        self._checked = now
        queue = queue_growing(self.waiting(), now, self.rate) if self.waiting is not None else None
        self._waiting_since = (self._waiting_since or now) if queue is not None else None
        if queue is not None and now - (self._waiting_since or now) >= PERSIST_S:
            self.reason = f"over-saturated at {now:.1f} s: {queue}"
            return self.reason
        if not self.dones:
            return None
        # from the first completion on: before it, in flight rises in any step (ramp-up)
        grid = np.arange(max(self.dones[0], now - WINDOW_S), now + 1e-9, SAMPLE_S)
        if len(grid) < 5:
            return None
        sends = np.searchsorted(np.asarray(self.sends), grid, side="right")
        dones = np.searchsorted(np.asarray(self.dones), grid, side="right")
        flying = sends - dones
        slope = float(np.polyfit(grid, flying, 1)[0])
        span = float(grid[-1] - grid[0])
        completion_rate = float(dones[-1] - dones[0]) / span
        rise = slope * span  # a handful of requests is noise, whatever the slope
        if (
            slope > SLOPE_SHARE * self.rate
            and completion_rate < COMPLETION_SHARE * self.rate
            and rise >= max(MIN_RISE, SLOPE_SHARE * self.rate * span)
        ):
            self._since = now if self._since is None else self._since
        else:
            self._since = None
        if self._since is not None and now - self._since >= PERSIST_S:
            self.reason = (
                f"over-saturated at {now:.1f} s: in flight rising {slope:.1f}/s, "
                f"completing {completion_rate:.1f}/s of {self.rate:g} sent/s"
            )
        return self.reason


def queue_growing(samples: list[tuple[float, float]], now: float, rate: float) -> str | None:
    """The server's waiting requests across the step so far (at least 5 scrapes): a fitted growth of
    more than WAITING_SHARE of the send rate a second, by at least MIN_RISE requests, each third of
    the step's scrapes higher on average than the one before; the reason then, else None. A queue
    that comes and goes under capacity (M/D/8 at 85% of N/S, simulated: tests) does not pass."""
    window = [(t, w) for t, w in samples if t <= now and not math.isnan(w)]
    if len(window) < 5:
        return None
    t, w = np.asarray(window).T
    slope = float(np.polyfit(t, w, 1)[0])
    span = float(t[-1] - t[0])
    k = len(w) // 3
    rising = w[:k].mean() < w[k : 2 * k].mean() < w[2 * k :].mean()
    if rising and slope > WAITING_SHARE * rate and slope * span >= MIN_RISE and w[-1] > w[0]:
        return f"the server's waiting requests grew {w[0]:g} -> {w[-1]:g} in {span:.1f} s ({slope:.1f}/s)"
    return None


def oversaturation(sent_ns: Sequence[int], end_ns: Sequence[int], rate: float) -> str | None:
    """The watch replayed on a step's records (the driver's live verdict, from the record times)."""
    if not len(sent_ns):
        return None
    t0 = min(sent_ns)
    watch = SaturationWatch(rate)
    events = sorted([(s - t0, 0) for s in sent_ns] + [(e - t0, 1) for e in end_ns])
    for t_ns, kind in events:
        t = t_ns / 1e9
        if watch.check(t) is not None:
            return watch.reason
        (watch.done if kind else watch.send)(t)
    return watch.check(events[-1][0] / 1e9) if events else None


def _margin(v: dict[str, Any]) -> float:
    """How far a verdict is from its bound, as a share of it: > 0 fails."""
    if v["measured"] is None:
        return math.inf
    bound = v["bound"] or 1e-12
    m = (v["measured"] - v["bound"]) / bound
    return m if v["kind"] == "max" else -m


def step_verdict(
    step: dict[str, Any], scenario: Scenario, cap: Capacity, pool: LoadPool | None = None
) -> dict[str, Any]:
    """pass|fail for one step: every SLO, the error rate under ``max_error_rate``, not over-saturated.
    ``margin`` is the worst SLO's (0 at the bound), ``binding`` the SLO it belongs to, ``ci`` its
    bootstrap interval over ``pool`` (every run at this load) when it is a latency percentile.
    ``uncertain``: some SLO is not surely met and none surely broken (capverdict.py)."""
    checks = []  # (name, margin, sure, interval)
    for v in evaluate_slos(step, scenario.slo):
        ci = pool.interval(v["slo"], v["stat"]) if pool is not None else None
        if ci is not None:
            margin, certain = sure(*ci, v["bound"], v["kind"])
        else:  # a percentile of too few requests (one of them decides it: a cold start) is never sure
            margin = _margin(v)
            certain = abs(margin) > cap.uncertain_margin and not (
                pool is not None and pool.sampled(v["slo"], v["stat"])
            )
        checks.append((f"{v['slo']}.{v['stat']}", margin, certain, describe(ci)))
    err = step.get("error_rate") or 0.0
    margin = (err - cap.max_error_rate) / max(cap.max_error_rate, 1e-12)
    checks.append(("error_rate", margin, abs(margin) > cap.uncertain_margin, None))
    binding, margin, _, ci = max(checks, key=lambda c: c[1])
    broken = any(c[1] > 0 and c[2] for c in checks)
    uncertain = not broken and not all(c[2] for c in checks)
    saturated = step.get("saturation")
    if saturated:
        binding, margin, uncertain, ci = "saturation", math.inf, False, None
    if not step["requests"]["sent"]:
        binding, margin, uncertain, ci = "no requests", math.inf, False, None
    return {
        "verdict": "pass" if margin <= 0 else "fail",
        "margin": margin,
        "binding": binding,
        "uncertain": uncertain,
        "ci": ci,
        "reason": saturated,
    }


def passed(verdict: dict[str, Any]) -> bool:
    """The search's direction: a step's verdict on its point estimates (an unsure one after all its
    re-runs too: the interval then keeps it inside)."""
    return verdict["verdict"] == "pass"


class CapacitySearch:
    """The next load to try, given the verdicts so far: (load, length factor) or None when done.

    ``lo`` is the highest load that passed under ``hi``, the lowest that did not (the latest verdict
    at each load, over all its runs, stands). Before it ends, the search confirms ``lo`` with one
    more run as long as all its runs so far (within ``lengthen``): a short step near capacity passes
    too easily, because a queue's long busy periods are rare within a few seconds."""

    def __init__(self, cap: Capacity) -> None:
        self.cap = cap
        self.final: dict[float, bool] = {}  # load -> passed
        self.status = "running"
        self._repeat: tuple[float, float] | None = None
        self._runs: dict[float, int] = {}
        self._confirmed: set[float] = set()

    @property
    def hi(self) -> float | None:
        return min((x for x, ok in self.final.items() if not ok), default=None)

    @property
    def lo(self) -> float | None:
        hi = self.hi
        return max((x for x, ok in self.final.items() if ok and (hi is None or x < hi)), default=None)

    def _round(self, x: float) -> float:
        return float(max(1, round(x))) if self.cap.over == "concurrency" else float(f"{x:.4g}")

    def next(self) -> tuple[float, float] | None:
        if self._repeat is not None:
            return self._repeat
        cap, lo, hi = self.cap, self.lo, self.hi
        if lo is None and hi is None:
            x = cap.start
        elif hi is None:
            assert lo is not None
            if lo >= cap.max:
                return self._done("above_max")
            x = min(cap.max, lo * cap.growth)
        elif lo is None:
            x = hi / cap.growth
            if x < cap.start / cap.growth**4 or (cap.over == "concurrency" and hi <= 1):
                return self._done("below_start")
        else:
            if (hi - lo) / lo <= cap.tolerance or (cap.over == "concurrency" and hi - lo <= 1):
                if lo not in self._confirmed and self._runs[lo] <= cap.lengthen:
                    self._confirmed.add(lo)  # once: as long again as all its runs so far
                    return lo, float(2 ** self._runs[lo])
                return self._done("found")
            x = math.sqrt(lo * hi)
            if cap.over == "concurrency":
                x = min(hi - 1, max(lo + 1, round(x)))
        return self._round(x), 1.0

    def _done(self, status: str) -> None:
        self.status = status
        return None

    def observe(self, load: float, verdict: dict[str, Any]) -> None:
        """The verdict at ``load`` over all its runs so far: an unsure one is run again, twice as long
        as the run before, up to ``lengthen`` times; one still unsure then goes by its point estimates."""
        runs = self._runs[load] = self._runs.get(load, 0) + 1
        if verdict["uncertain"] and runs <= self.cap.lengthen:
            self._repeat = (load, float(2**runs))
            return
        self._repeat = None
        self.final[load] = passed(verdict)


def pooled_verdicts(
    steps: list[dict[str, Any]], accumulators: dict[int, StepAccumulator], scenario: Scenario, cap: Capacity
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(step, verdict over every run at its load up to it), in order: what the planner judged live."""
    pools: dict[float, LoadPool] = {}
    out = []
    for s in steps:
        pool = pools.setdefault(float(s["value"]), LoadPool(float(s["value"])))
        if (acc := accumulators.get(s["index"])) is not None:
            pool.add(acc)
        out.append((s, step_verdict(s, scenario, cap, pool)))
    return out


def capacity_result(
    steps: list[dict[str, Any]], scenario: Scenario, accumulators: dict[int, StepAccumulator] | None = None
) -> dict[str, Any] | None:
    """summary.json's ``capacity`` from the steps that ran. The last verdict at each load stands (over
    all its runs). ``value`` = the highest load that passed under the lowest that did not (as the
    search went); ``interval`` = [the highest load under it that surely passed, the lowest above it
    that surely failed]: loads whose verdict stayed unsure after their re-runs lie inside it."""
    cap = scenario.load.capacity
    if cap is None:
        return None
    final: dict[float, dict[str, Any]] = {}
    rows = []
    for s, v in pooled_verdicts(steps, accumulators or {}, scenario, cap):
        final[float(s["value"])] = v
        margin = None if math.isinf(v["margin"]) else round(v["margin"], 4)
        verdict = "uncertain" if v["uncertain"] else v["verdict"]
        rows.append({"index": s["index"], "load": s["value"], "verdict": verdict, "margin": margin, "ci": v["ci"],
                     "binding": v["binding"], "reason": v["reason"], "duration_s": s.get("duration_s")})  # fmt: skip
    not_passed = [x for x, v in final.items() if not passed(v)]
    top = min(not_passed, default=None)
    lo = max((x for x, v in final.items() if passed(v) and (top is None or x < top)), default=None)
    # the interval: from the highest load that surely passed to the lowest that surely failed
    sure_pass = [x for x, v in final.items() if passed(v) and not v["uncertain"] and lo is not None and x <= lo]
    sure_fail = [x for x, v in final.items() if not passed(v) and not v["uncertain"] and (lo is None or x > lo)]
    low = max(sure_pass, default=lo)
    hi = min(sure_fail, default=top)
    status = "found" if lo is not None and top is not None else "above_max" if top is None else "below_start"
    if not steps:
        status = "no_steps"
    return {
        "value": lo,
        "unit": "req/s" if cap.over == "rate" else "concurrency",
        "over": cap.over,
        "interval": [low, hi],
        "status": status,
        "binding_slo": final[top]["binding"] if top is not None else None,
        "tolerance": cap.tolerance,
        "steps": rows,
    }


def floor_verdict(result: dict[str, Any], cap: Capacity) -> dict[str, Any] | None:
    """The gate of ``load.capacity.floor``, as an SLO verdict: the capacity found (none: 0) at least
    the floor; None without a floor."""
    if cap.floor is None:
        return None
    value = result["value"]
    return {
        "step": "capacity",
        "value_of_step": result["unit"],
        "slo": "capacity",
        "stat": "floor",
        "bound": cap.floor,
        "kind": "min",
        "measured": value,
        "ok": value is not None and value >= cap.floor,
    }


def compare_capacity(
    base: dict[str, Any] | None, cand: dict[str, Any] | None, tolerance: float
) -> dict[str, Any] | None:
    """compare.json's capacity row: *regressed* when the candidate's whole interval lies below the
    baseline's by more than ``tolerance`` (cand.hi < base.lo x (1 - tolerance)), *improved* when it
    lies above by more (cand.lo > base.hi x (1 + tolerance)), else *unchanged*. An interval with no
    failing step (above_max) has no upper edge; one with no passing step (below_start) has 0 below."""
    if not base or not cand or (base.get("value") is None and cand.get("value") is None):
        return None
    b_lo, b_hi = base["interval"][0] or 0.0, base["interval"][1]
    c_lo, c_hi = cand["interval"][0] or 0.0, cand["interval"][1]
    regressed = c_hi is not None and c_hi < b_lo * (1 - tolerance)
    improved = b_hi is not None and c_lo > b_hi * (1 + tolerance)
    b_val, c_val = base.get("value") or 0.0, cand.get("value") or 0.0
    return {
        "mode": "capacity",
        "value": cand.get("unit"),
        "metric": "capacity",
        "label": f"capacity ({cand.get('unit')})",
        "higher_is_better": True,
        "baseline": b_val,
        "candidate": c_val,
        "change": c_val / b_val - 1 if b_val else 0.0,
        # the change's range, from the two intervals (an open edge: unbounded)
        "ci95": [c_lo / b_hi - 1 if b_hi else -1.0, c_hi / b_lo - 1 if c_hi is not None and b_lo else math.inf],
        "baseline_interval": [b_lo, b_hi],
        "candidate_interval": [c_lo, c_hi],
        "verdict": "regressed" if regressed else "improved" if improved else "unchanged",
    }
