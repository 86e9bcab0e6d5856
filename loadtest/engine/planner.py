"""Which step runs next: a fixed sweep (with an early stop), or limit discovery.

The driver asks for the next step only after the previous one finished, and the planner has seen
that step's records by then (it is an event observer), so the plan can depend on the results.

Limit discovery is one continuous probe of the server's rate limits (limitprobe.py measures
them). After its first step it waits once for the advertised reset (``cooldown_s`` when set), so
the probe starts on a full bucket; then it multiplies the open-loop rate by ``factor`` with no
pause between steps (the server's buckets carry their state from step to step) until 429s come,
and holds that rate ``steady_s`` to measure the refill of the drained bucket (a rate only just
above the refill is raised again: too few refusals to tell it from a burst). At ``max_rate``
with no 429 yet, it keeps that rate while a bucket may drain within ``max_drain_s``: headers
that project a longer drain, or no remaining that falls, end it at once. A step that breaks on
other errors or an SLO before any 429 is bisected between the last rate that held and the first
that broke, with a cooldown (the advertised reset) between steps, until within ``tolerance``.

Either stops after a step in which no request could even connect: the endpoint is down, and the
steps left would measure nothing but that (limit discovery would step its rate down to
``max_steps``, each step ``step_duration_s`` long).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from loadtest.analysis.capacity import CapacitySearch, oversaturation, step_verdict
from loadtest.analysis.capverdict import LoadPool
from loadtest.analysis.events import Event, RequestDone, StepFinished
from loadtest.analysis.limitprobe import SHALLOW, Findings, ProbeSeries, findings, judge
from loadtest.analysis.limitsummary import step_holds
from loadtest.analysis.live import LiveStep
from loadtest.analysis.metrics import StepAccumulator
from loadtest.config.scenario import Capacity, Scenario, Search
from loadtest.config.steps import StepPlan, plan_steps, step_plan

__all__ = ["StepPlanner"]

_MAX_COOLDOWN_S = 60.0


class StepPlanner:
    """An iterator of steps and an event observer in one."""

    def __init__(self, scenario: Scenario, live: LiveStep) -> None:
        self.scenario = scenario
        self.live = live  # fed before the planner: the step that just finished, its error rate, unreachable
        # limit discovery needs a full summary of each step (percentiles for SLOs): exact, not live
        search = scenario.load.search is not None or scenario.load.capacity is not None
        self.acc = StepAccumulator(scenario.slo.per_request) if search else None
        self.last: dict[str, Any] | None = None  # limit discovery: the summary of the step that just finished
        # limit discovery: every request's charge, admission and advertised remaining
        self.probe = ProbeSeries(scenario.workload.max_tokens) if scenario.load.search is not None else None
        self.pools: dict[float, LoadPool] = {}  # capacity search: every run at each load, pooled

    @property
    def unreachable(self) -> bool:
        """The step that just finished: not one request connected."""
        return self.live.last is not None and bool(self.live.last["unreachable"])

    def __call__(self, event: Event) -> None:
        if self.acc is None:
            return
        match event:
            case RequestDone(record=record):
                self.acc.add(record)
                if self.probe is not None:
                    self.probe.add(record)
            case StepFinished(step=step, saturation=cut):
                self.last = self.acc.summary(index=step.index, mode=step.mode, value=step.value)
                if step.watch_saturation:  # the driver's reason when it cut the step, else the replay's
                    self.last["saturation"] = cut or oversaturation(self.acc.sent_ns, self.acc.end_ns, step.value)
                if self.scenario.load.capacity is not None:
                    self.pools.setdefault(step.value, LoadPool(step.value)).add(self.acc)
                self.acc = StepAccumulator(self.scenario.slo.per_request)

    def _error_ceiling_passed(self) -> bool:
        stop = self.scenario.load.stop
        limit = stop.max_error_rate if stop is not None else None
        last = self.live.last
        return limit is not None and last is not None and last["error_rate"] > limit

    def steps(self) -> Iterator[StepPlan]:
        search = self.scenario.load.search
        if self.scenario.load.capacity is not None:
            yield from self._capacity(self.scenario.load.capacity)
            return
        if search is None:
            for step in plan_steps(self.scenario.load):
                if self.unreachable or self._error_ceiling_passed():
                    return  # the summary lists the steps that never ran (skipped_steps)
                yield step
            return
        yield from self._search(search)

    def _capacity(self, cap: Capacity) -> Iterator[StepPlan]:
        """Capacity under SLO (analysis/capacity.py): each step's verdict chooses the next load."""
        search = CapacitySearch(cap)
        index = 0
        while index < cap.max_steps and (nxt := search.next()) is not None:
            load, longer = nxt  # longer: an unsure load's re-run, this many times the step's length
            plan = step_plan(self.scenario.load, index, load)
            if longer != 1.0:
                plan = replace(
                    plan,
                    duration_s=plan.duration_s * longer if plan.duration_s is not None else None,
                    requests=int(plan.requests * longer) if plan.requests is not None else None,
                )
            yield plan
            index += 1
            if self.last is None or self.unreachable:
                return
            search.observe(load, step_verdict(self.last, self.scenario, cap, self.pools.get(load)))

    def _cooldown(self) -> float:
        """The advertised reset of the per-minute buckets (at most 60 s), or ``cooldown_s``: a day
        bucket does not refill in any pause worth taking."""
        search = self.scenario.load.search
        if search is not None and search.cooldown_s is not None:
            return search.cooldown_s
        rl = (self.last or {}).get("ratelimit") or {}
        resets = [v.get("reset_s") or 0.0 for v in rl.values() if v.get("window", "minute") == "minute"]
        return min(_MAX_COOLDOWN_S, max(resets, default=0.0))

    def _first_wait(self, probe: ProbeSeries) -> float:
        """After the first step, once: until its buckets are full again. Without headers, a first
        step that met 429s waits a whole minute (a per-minute bucket refills in one)."""
        wait = self._cooldown()
        advertised = bool((self.last or {}).get("ratelimit"))
        search = self.scenario.load.search
        if not advertised and (search is None or search.cooldown_s is None) and 0 in probe.throttled_steps:
            return _MAX_COOLDOWN_S
        return wait

    def _search(self, search: Search) -> Iterator[StepPlan]:
        probe = self.probe
        rate, index, pause, at_max, duration = search.start_rate, 0, 0.0, 0.0, search.step_duration_s
        held: float | None = None  # the last ramp rate that held
        rates: dict[int, float] = {}  # each step's offered rate
        while index < search.max_steps and probe is not None:
            yield replace(step_plan(self.scenario.load, index, round(rate, 4)), pause_s=pause, duration_s=duration)
            index += 1
            pause, at_max = 0.0, at_max + (duration if rate >= search.max_rate else 0.0)
            if self.last is None or self.unreachable:
                return
            if index == 1:
                pause = self._first_wait(probe)
                if 0 in probe.throttled_steps:
                    continue  # its bucket was not full: start again on a full one, at the same rate
            rates[index - 1] = round(rate, 4)
            found = findings(probe, rates)
            if found.first_429 is not None:  # a bucket is empty: measure its refill
                hold = self._hold(found, rate, search)
                if hold is None:
                    return
                rate, duration = hold
            elif not step_holds(self.last, self.scenario):  # other errors or an SLO, before any 429
                yield from self._bisect(search, held, rate, index)
                return
            elif rate < search.max_rate:
                held, rate = rate, min(search.max_rate, rate * search.factor)
            elif not self._may_drain(found, at_max, search):
                return  # no limit found up to max_rate

    def _hold(self, found: Findings, rate: float, search: Search) -> tuple[float, float] | None:
        """(rate, duration) of the next steady step, or None when the refill has been measured:
        ``steady_s`` of steady windows at one rate, clearly above the refill (or at max_rate)."""
        at_max = rate >= search.max_rate
        # a bucket of less than two requests wastes refill between bursty arrivals unless they come
        # far faster than it refills: its refill is measured at max_rate
        shallow = found.burst is not None and found.burst["requests"] < SHALLOW
        here = found.at_rate(rate)
        judged, clear = judge(here)
        seen = sum(w.end - w.start for w in here)
        if seen >= 0.9 * search.steady_s and (at_max or (clear and not shallow)):
            return None
        # too few refusals to tell the refill from a burst (the rate is too close to it), a steady
        # step with hardly any 429 (the rate is under it), or a shallow bucket: go higher
        index = (self.last or {}).get("index")
        no_429 = not here and index != found.first_429_step
        if (judged and (not clear or shallow)) or no_429:
            if at_max:
                return None if no_429 else (rate, max(1.1 * search.steady_s - seen, 0.25 * search.steady_s))
            higher = search.max_rate if clear and shallow else min(search.max_rate, rate * search.factor)
            return higher, 1.1 * search.steady_s
        # hold on: the first 429 came late in its step, or more steady time is needed
        return rate, max(1.1 * search.steady_s - seen, 0.25 * search.steady_s)

    @staticmethod
    def _may_drain(found: Findings, at_max: float, search: Search) -> bool:
        """At max_rate with no 429 yet: hold it while a bucket may still drain within max_drain_s.
        Without headers, up to max_drain_s; with them, while one falls fast enough to empty in it."""
        if at_max >= search.max_drain_s:
            return False
        if not found.fits:
            return True
        etas = [fit.remaining / fit.falling for fit in found.fits.values() if fit.falling > 0]
        return bool(etas) and at_max + min(etas) <= search.max_drain_s

    def _bisect(self, search: Search, lo: float | None, hi: float, index: int) -> Iterator[StepPlan]:
        """Between the last rate that held and the first that broke (below it when none held)."""
        rate = hi
        while index < search.max_steps:
            if lo is None:
                rate = rate / search.factor  # broke at the start rate: step down
            elif (hi - lo) / lo <= search.tolerance:
                return
            else:
                rate = (lo + hi) / 2
            yield replace(step_plan(self.scenario.load, index, round(rate, 4)), pause_s=self._cooldown())
            index += 1
            if self.last is None or self.unreachable:
                return
            if step_holds(self.last, self.scenario):
                lo = rate
            else:
                hi = rate
