"""Capacity under SLO: the highest load (open-loop rate or concurrency) at which every SLO holds.

Pure: the search (``CapacitySearch``: grow by ``growth`` from ``start`` while steps pass, fall
while they fail, then bisect geometrically to ``tolerance``), one step's verdict from its summary
(``step_verdict``), the over-saturation detector (``SaturationWatch``: in-flight rising while
completions lag the send rate, so a step past capacity ends in seconds), and the summary's
``capacity`` from the steps that ran (``capacity_result``). The planner (engine/planner.py) runs
the search; the driver feeds the watch live; the summary replays the same watch on the records.

A step whose worst SLO margin lies within ``uncertain_margin`` of its bound is near the boundary:
its verdict is not trusted until a run twice as long confirms it (the later, longer run stands).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from loadtest.analysis.checks import evaluate_slos
from loadtest.config.scenario import Capacity, Scenario

__all__ = ["CapacitySearch", "SaturationWatch", "capacity_result", "compare_capacity", "oversaturation", "step_verdict"]

# over-saturation: judged over the last WINDOW_S of samples taken every SAMPLE_S, from MIN_S into the step
SAMPLE_S, WINDOW_S, MIN_S = 0.25, 5.0, 2.5
PERSIST_S = 1.0  # ...and the signal must hold at every check for this long (a Poisson burst passes)
SLOPE_SHARE = 0.3  # in-flight growing by at least this share of the send rate, per second...
COMPLETION_SHARE = 0.8  # ...while completions stay under this share of it
MIN_RISE = 8  # ...by at least this many requests over the window


class SaturationWatch:
    """Sends and completions of one open-loop step at ``rate`` req/s, times in seconds from its start."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.sends: list[float] = []
        self.dones: list[float] = []
        self.reason: str | None = None
        self._checked = -math.inf
        self._since: float | None = None  # when the signal started to hold

    def send(self, t: float) -> None:
        self.sends.append(t)

    def done(self, t: float) -> None:
        bisect.insort(self.dones, t)

    def check(self, now: float) -> str | None:
        """Why the step is over-saturated (and when), or None; at most one evaluation per SAMPLE_S."""
        if self.reason is not None or now < MIN_S or now - self._checked < SAMPLE_S:
            return self.reason
        self._checked = now
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


def step_verdict(step: dict[str, Any], scenario: Scenario, cap: Capacity) -> dict[str, Any]:
    """pass|fail for one step: every SLO, the error rate under ``max_error_rate``, not over-saturated.
    ``margin`` is the worst SLO's (0 at the bound), ``binding`` the SLO it belongs to."""
    checks = [(f"{v['slo']}.{v['stat']}", _margin(v)) for v in evaluate_slos(step, scenario.slo)]
    err = step.get("error_rate") or 0.0
    checks.append(("error_rate", (err - cap.max_error_rate) / max(cap.max_error_rate, 1e-12)))
    binding, margin = max(checks, key=lambda c: c[1])
    saturated = step.get("saturation")
    if saturated:
        binding, margin = "saturation", math.inf
    if not step["requests"]["sent"]:
        binding, margin = "no requests", math.inf
    return {
        "verdict": "pass" if margin <= 0 else "fail",
        "margin": margin,
        "binding": binding,
        "uncertain": abs(margin) <= cap.uncertain_margin,
        "reason": saturated,
    }


class CapacitySearch:
    """The next load to try, given the verdicts so far: (load, length factor) or None when done."""

    def __init__(self, cap: Capacity) -> None:
        self.cap = cap
        self.lo: float | None = None  # highest load that passed
        self.hi: float | None = None  # lowest load that failed
        self.status = "running"
        self._repeat: float | None = None
        self._lengthened: set[float] = set()
        self._last: float | None = None

    def _round(self, x: float) -> float:
        return float(max(1, round(x))) if self.cap.over == "concurrency" else float(f"{x:.4g}")

    def next(self) -> tuple[float, float] | None:
        if self._repeat is not None:
            return self._repeat, 2.0
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
                return self._done("found")
            x = math.sqrt(lo * hi)
            if cap.over == "concurrency":
                x = min(hi - 1, max(lo + 1, round(x)))
        x = self._round(x)
        self._last = x
        return x, 1.0

    def _done(self, status: str) -> None:
        self.status = status
        return None

    def observe(self, load: float, verdict: dict[str, Any]) -> None:
        """The verdict of the step just run at ``load`` (a near-boundary one is run again, longer)."""
        if self._repeat is None and verdict["uncertain"] and load not in self._lengthened:
            self._repeat = load
            self._lengthened.add(load)
            return
        self._repeat = None
        if verdict["verdict"] == "pass":
            self.lo = load if self.lo is None else max(self.lo, load)
            if self.hi is not None and self.hi <= load:
                self.hi = None  # non-monotonic: a higher load passed; search above it again
        else:
            self.hi = load if self.hi is None else min(self.hi, load)
            if self.lo is not None and self.lo >= load:
                self.lo = None


def capacity_result(steps: list[dict[str, Any]], scenario: Scenario) -> dict[str, Any] | None:
    """summary.json's ``capacity`` from the steps that ran: the latest verdict at each load stands
    (a lengthened re-run replaces the first), value = the highest passing load under the lowest failing one."""
    cap = scenario.load.capacity
    if cap is None:
        return None
    final: dict[float, dict[str, Any]] = {}
    rows = []
    for s in steps:
        v = step_verdict(s, scenario, cap)
        final[float(s["value"])] = v
        margin = None if math.isinf(v["margin"]) else round(v["margin"], 4)
        rows.append({"index": s["index"], "load": s["value"], "verdict": v["verdict"], "margin": margin,
                     "binding": v["binding"], "reason": v["reason"], "duration_s": s.get("duration_s")})  # fmt: skip
    fails = [x for x, v in final.items() if v["verdict"] == "fail"]
    hi = min(fails, default=None)
    passes = [x for x, v in final.items() if v["verdict"] == "pass" and (hi is None or x < hi)]
    lo = max(passes, default=None)
    status = "found" if lo is not None and hi is not None else "above_max" if hi is None else "below_start"
    if not steps:
        status = "no_steps"
    return {
        "value": lo,
        "unit": "req/s" if cap.over == "rate" else "concurrency",
        "over": cap.over,
        "interval": [lo, hi],
        "status": status,
        "binding_slo": final[hi]["binding"] if hi is not None else None,
        "tolerance": cap.tolerance,
        "steps": rows,
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
