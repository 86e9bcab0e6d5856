"""The steps of a run: one per load value of the scenario, each with its warmup and its length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from loadtest.config.scenario import Load

__all__ = ["StepPlan", "plan_steps", "step_plan"]


@dataclass(frozen=True)
class StepPlan:
    index: int
    mode: Literal["concurrency", "rate", "trace"]  # trace: value is the speedup
    value: float
    requests: int | None  # measured requests; None when the step is timed
    duration_s: float | None
    warmup: int
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    max_concurrency: int = 1024
    pause_s: float = 0.0  # wait before the step (limit discovery lets the server's buckets refill)
    burstiness: float = 1.0  # gamma arrivals' shape
    ramp_from: float | None = None  # load.ramp: the load rises from this to value over ramp_s, then holds
    ramp_s: float | None = None
    watch_saturation: bool = False  # capacity search: an open-loop step past capacity ends early

    @property
    def connections(self) -> int:
        return int(self.value) if self.mode == "concurrency" else self.max_concurrency


def step_plan(load: Load, index: int, value: float) -> StepPlan:
    """Step ``index`` at load ``value`` with the scenario's settings; a limit-discovery step is an
    open-loop step of ``search.step_duration_s``."""
    search = load.search
    if load.capacity is not None:
        return _capacity_step(load, index, value)
    return StepPlan(
        index=index,
        mode=load.mode,
        value=value,
        requests=load.requests if search is None else None,
        duration_s=load.duration_s if search is None else search.step_duration_s,
        warmup=load.warmup_requests,
        arrival=load.arrival,
        max_concurrency=load.max_concurrency,
        burstiness=load.burstiness,
        ramp_from=load.ramp.start if load.ramp is not None else None,
        ramp_s=load.ramp.over_s if load.ramp is not None else None,
    )


def _capacity_step(load: Load, index: int, value: float) -> StepPlan:
    """A capacity-search step: ``step_duration_s`` or ``step_requests`` long (a lengthened step
    is the caller's ``replace``)."""
    cap = load.capacity
    assert cap is not None
    return StepPlan(
        index=index,
        mode=cap.over,
        value=value,
        requests=cap.step_requests,
        duration_s=cap.step_duration_s,
        warmup=load.warmup_requests,
        arrival=load.arrival,
        max_concurrency=load.max_concurrency,
        burstiness=load.burstiness,
        watch_saturation=cap.over == "rate",
    )


def plan_steps(load: Load) -> list[StepPlan]:
    return [step_plan(load, i, v) for i, v in enumerate(load.values)]
