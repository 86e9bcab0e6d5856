"""Which step runs next: a fixed sweep (with an early stop), or limit discovery.

The driver asks for the next step only after the previous one finished, and the planner has seen
that step's records by then (it is an event observer), so the plan can depend on the results.

Limit discovery raises an open-loop rate by ``factor`` until a step breaks (its 429 share, its
error rate or an SLO), then bisects between the last rate that held and the first that broke,
until they are within ``tolerance``. Between steps it waits for the advertised reset (the
server's buckets refill), so one step's throttling does not spill into the next.

Either stops after a step in which no request could even connect: the endpoint is down, and the
steps left would measure nothing but that (limit discovery would step its rate down to
``max_steps``, each step ``step_duration_s`` long).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from .checks import CANNOT_CONNECT, evaluate_slos
from .driver import Event, RequestDone, StepFinished, StepPlan, plan_steps, step_plan
from .metrics import LiveStats, StepAccumulator
from .scenario import Scenario, Search

__all__ = ["StepPlanner", "search_result", "step_holds"]

_MAX_COOLDOWN_S = 60.0


def step_holds(step: dict[str, Any], scenario: Scenario) -> bool:
    """A step is sustainable when its 429 share and error rate stay under the search's bounds and
    every SLO holds."""
    search = scenario.load.search
    max_429, max_err = (search.max_429_rate, search.max_error_rate) if search is not None else (0.0, 0.0)
    other_errors = step["error_rate"] - step["rate_429"]
    if not step["requests"]["sent"] or step["rate_429"] > max_429 or other_errors > max_err:
        return False
    return all(v["ok"] for v in evaluate_slos(step, scenario.slo))


def _per_min(value: float | None) -> float | None:
    return None if value is None else value * 60


def _tokens_per_request(step: dict[str, Any]) -> float:
    return (step["input_tokens"]["mean"] or 0.0) + (step["output_tokens"]["mean"] or 0.0)


def search_result(steps: list[dict[str, Any]], scenario: Scenario) -> dict[str, Any] | None:
    """The highest sustainable rate, and the advertised limits audited against what was observed."""
    if scenario.load.search is None or not steps:
        return None
    held = [s for s in steps if step_holds(s, scenario)]
    broke = [s for s in steps if not step_holds(s, scenario)]
    best = max(held, key=lambda s: s["value"]) if held else None
    first_broken = min(
        (s for s in broke if best is None or s["value"] > best["value"]), key=lambda s: s["value"], default=None
    )
    advertised = next((s["ratelimit"] for s in reversed(steps) if s.get("ratelimit")), None) or {}
    out: dict[str, Any] = {
        "sustainable_rate_rps": best["value"] if best else None,
        "sustainable_rpm": _per_min(best["value"]) if best else None,  # the offered rate that held
        "observed_rpm": _per_min(best["request_throughput"]) if best else None,
        # the offered rate times what a request carried (prompt + output tokens)
        "sustainable_tokens_per_min": _per_min(best["value"] * _tokens_per_request(best)) if best else None,
        "throttled_from_rpm": _per_min(first_broken["value"]) if first_broken else None,
        "advertised": advertised,
        "steps": len(steps),
    }
    audit, ratios = [], {}
    for kind, unit, observed in (
        ("requests", "RPM", out["sustainable_rpm"]),
        ("tokens", "tokens/min", out["sustainable_tokens_per_min"]),
    ):
        limit = (advertised.get(kind) or {}).get("limit")
        window = (advertised.get(kind) or {}).get("window", "minute")
        if limit is None:
            continue
        per_min = limit if window == "minute" else limit / 1440
        if observed is not None:
            ratios[kind] = observed / per_min
        text = f"advertised {limit:g} {kind} per {window}"
        if kind == "requests" and out["throttled_from_rpm"] is not None:
            text += f", throttled from {out['throttled_from_rpm']:.0f} RPM"
        if observed is not None:
            text += f", sustained {observed:,.0f} {unit} ({100 * observed / per_min:.0f}% of the per-minute limit)"
        audit.append(text)
    out["binding"] = max(ratios, key=lambda k: ratios[k]) if ratios else None
    out["audit"] = "; ".join(audit) if audit else "no rate-limit headers were advertised"
    return out


class StepPlanner:
    """An iterator of steps and an event observer in one."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        # What a step's outcome needs: a full summary for limit discovery (percentiles for SLOs),
        # counts for an error ceiling, nothing for a plain sweep (no work on the hot path).
        self._make: Callable[[], StepAccumulator | LiveStats] | None = None
        if scenario.load.search is not None:
            self._make = lambda: StepAccumulator(scenario.slo.per_request)
        elif scenario.load.stop is not None and scenario.load.stop.max_error_rate is not None:
            self._make = LiveStats
        self.acc = self._make() if self._make is not None else None
        self.last: dict[str, Any] | None = None  # the outcome of the step that just finished
        # every step: how many records it had, and how many of them could not connect
        self._records = self._connect_failed = 0
        self.unreachable = False  # the step that just finished: not one request connected

    def __call__(self, event: Event) -> None:
        match event:
            case RequestDone(record=record):
                self._records += 1
                self._connect_failed += record.error_class in CANNOT_CONNECT
            case StepFinished():
                self.unreachable = self._records > 0 and self._connect_failed == self._records
                self._records = self._connect_failed = 0
        if self.acc is None or self._make is None:
            return
        match event:
            case RequestDone(record=record):
                self.acc.add(record)
            case StepFinished(step=step):
                if isinstance(self.acc, LiveStats):
                    line = self.acc.line(index=step.index, mode=step.mode, value=step.value)
                    sent = line["requests"]["sent"]
                    self.last = {**line, "error_rate": line["requests"]["failed"] / sent if sent else 0.0}
                else:
                    self.last = self.acc.summary(index=step.index, mode=step.mode, value=step.value)
                self.acc = self._make()

    def _error_ceiling_passed(self) -> bool:
        stop = self.scenario.load.stop
        limit = stop.max_error_rate if stop is not None else None
        return limit is not None and self.last is not None and self.last["error_rate"] > limit

    def steps(self) -> Iterator[StepPlan]:
        search = self.scenario.load.search
        if search is None:
            for step in plan_steps(self.scenario.load):
                if self.unreachable or self._error_ceiling_passed():
                    return  # the summary lists the steps that never ran (skipped_steps)
                yield step
            return
        yield from self._search(search)

    def _cooldown(self) -> float:
        search = self.scenario.load.search
        if search is not None and search.cooldown_s is not None:
            return search.cooldown_s
        rl = (self.last or {}).get("ratelimit") or {}
        resets = [v.get("reset_s") or 0.0 for v in rl.values()]
        return min(_MAX_COOLDOWN_S, max(resets, default=0.0))

    def _search(self, search: Search) -> Iterator[StepPlan]:
        rate, lo, hi, index = search.start_rate, None, None, 0
        while index < search.max_steps:
            step = step_plan(self.scenario.load, index, round(rate, 4))
            yield replace(step, pause_s=self._cooldown() if index else 0.0)
            index += 1
            if self.last is None or self.unreachable:
                return
            if step_holds(self.last, self.scenario):
                lo = rate
            else:
                hi = rate
            if hi is None:
                if rate >= search.max_rate:
                    return  # never throttled up to max_rate
                rate = min(search.max_rate, rate * search.factor)
            elif lo is None:
                rate = rate / search.factor  # broke at the start rate: step down
            else:
                if (hi - lo) / lo <= search.tolerance:
                    return
                rate = (lo + hi) / 2
