"""Splitting a run's load across N workers (``--workers`` processes or Ray actors). Pure functions.

Closed loop: worker i gets its share of the concurrency and as many of the step's requests as its
share of the concurrency (a worker with no connections sends nothing). Open loop: each worker runs
an independent arrival process at ``rate / N`` (the superposition of N Poisson processes at
``rate / N`` is a Poisson process at ``rate``) and sends its share of the requests.
"""

from __future__ import annotations

from dataclasses import replace

from loadtest.config.scenario import Scenario
from loadtest.config.steps import StepPlan, plan_steps

__all__ = ["apportion", "shard_step", "shard_steps", "worker_scenario", "worker_steps"]


def apportion(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder); they sum to ``total``."""
    if total < 0 or not weights or any(w < 0 for w in weights):
        raise ValueError("apportion: total >= 0 and non-negative weights are required")
    s = sum(weights)
    if s == 0:
        return [0] * len(weights)
    exact = [total * w / s for w in weights]
    base = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (base[i] - exact[i], i))  # largest remainder first
    for i in order[: total - sum(base)]:
        base[i] += 1
    return base


def shard_step(step: StepPlan, workers: int, i: int) -> StepPlan:
    """Worker ``i``'s part of ``step`` (of ``workers``). The parts add up to the whole step."""
    if step.mode == "concurrency":
        shares = apportion(int(step.value), [1.0] * workers)
        weights = [float(c) for c in shares]
        value: float = shares[i]
    else:
        weights = [1.0] * workers
        value = step.value / workers
    requests = apportion(step.requests, weights)[i] if step.requests is not None else None
    return replace(
        step,
        value=value,
        requests=requests,
        warmup=apportion(step.warmup, weights)[i],
        max_concurrency=max(1, apportion(step.max_concurrency, [1.0] * workers)[i]),
    )


def shard_steps(steps: list[StepPlan], workers: int, i: int) -> list[StepPlan]:
    return [shard_step(s, workers, i) for s in steps]


def worker_scenario(scenario: Scenario, i: int) -> Scenario:
    """Worker ``i``'s scenario: its own seed, so workers send distinct prompts (no shared
    prefix-cache hits) and run independent arrival processes."""
    seed = scenario.workload.seed + 7919 * i
    return scenario.model_copy(update={"workload": scenario.workload.model_copy(update={"seed": seed})})


def worker_steps(scenario: Scenario, workers: int, i: int) -> list[StepPlan]:
    """Worker ``i``'s share of every step of the scenario."""
    return shard_steps(plan_steps(scenario.load), workers, i)
