"""When an open-loop step's requests are due: seeded arrival processes, and load ramps.

Gamma arrivals are vLLM's ``--burstiness``: gaps ``gamma(shape=b, scale=1/(rate*b))``, mean ``1/rate``,
coefficient of variation ``1/sqrt(b)`` (1: Poisson; below 1 burstier; above 1 more regular).

A ramp moves the rate along a line from ``r0`` to ``r1`` over ``T`` seconds, then holds ``r1``. Arrivals
are drawn at rate 1 (a unit-rate process: constant, Poisson or gamma) and mapped through the inverse
of the cumulative rate ``L(t)`` (``L(t) = r0 t + (r1 - r0) t^2 / 2T`` up to T, then ``r1`` a second),
so the delivered rate follows the line whichever process is chosen (time-based, unlike vLLM's
per-request-index ramp, because a step may be timed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from loadtest.config.steps import StepPlan

__all__ = ["RateLine", "arrival_offsets_ns", "ramp_starts_s", "step_offsets_ns", "warmup_lead_ns"]

Arrival = Literal["constant", "poisson", "gamma"]


@dataclass(frozen=True)
class RateLine:
    """A rate rising (or falling) linearly from ``r0`` to ``r1`` over ``over_s``, then flat at ``r1``."""

    r0: float
    r1: float
    over_s: float = 0.0

    @property
    def _slope(self) -> float:
        return (self.r1 - self.r0) / self.over_s if self.over_s > 0 else 0.0

    def cumulative(self, t: np.ndarray | float) -> np.ndarray:
        """``L(t)``: the arrivals expected in ``[0, t)``."""
        t = np.asarray(t, dtype=float)
        ramp = np.minimum(t, self.over_s)
        return self.r0 * ramp + self._slope * ramp**2 / 2 + self.r1 * np.maximum(t - self.over_s, 0.0)

    def invert(self, u: np.ndarray) -> np.ndarray:
        """The times at which ``L`` reaches each of ``u`` (the inverse of ``cumulative``)."""
        u = np.asarray(u, dtype=float)
        at_top = float(self.cumulative(self.over_s))
        k = self._slope
        inside = np.minimum(u, at_top)
        with np.errstate(divide="ignore", invalid="ignore"):  # r0 = 0 at u = 0: 0/0, which is t = 0
            # t = (-r0 + sqrt(r0^2 + 2ku)) / k, written without the cancellation (and right for k = 0)
            t_ramp = np.where(inside > 0, 2 * inside / (self.r0 + np.sqrt(self.r0**2 + 2 * k * inside)), 0.0)
        return np.where(u <= at_top, t_ramp, self.over_s + (u - at_top) / self.r1)


def _unit_arrivals(
    arrival: Arrival, burstiness: float, rng: np.random.Generator, count: int | None, total: float | None
) -> np.ndarray:
    """Arrival times of a unit-rate process: ``count`` of them from 0, or ``round(total)`` in ``[0, total)``
    (Poisson: sorted uniform times; gamma: its gaps scaled so they fill ``total`` exactly, as vLLM does)."""
    if count is None:
        assert total is not None
        n = round(total)
        if arrival == "constant":
            return np.arange(n, dtype=float)
        if arrival == "poisson":
            return np.sort(rng.uniform(0.0, total, n))
        gaps = rng.gamma(burstiness, 1.0 / burstiness, n)
        cum = np.cumsum(gaps)
        return np.concatenate(([0.0], cum[:-1])) * (total / cum[-1]) if n else np.empty(0)
    if arrival == "constant":
        return np.arange(count, dtype=float)
    k = max(count - 1, 0)
    gaps = rng.exponential(1.0, k) if arrival == "poisson" else rng.gamma(burstiness, 1.0 / burstiness, k)
    return np.concatenate(([0.0], np.cumsum(gaps)))[:count]


def arrival_offsets_ns(
    rate: float,
    arrival: Arrival,
    *,
    count: int | None = None,
    duration_s: float | None = None,
    seed: int = 0,
    burstiness: float = 1.0,
    ramp: tuple[float, float] | None = None,
) -> np.ndarray:
    """Due times (ns from the step's start) of an open-loop step, sorted.

    ``count`` arrivals: constant spacing ``1/rate``, or exponential gaps (a Poisson process), or gamma
    gaps of shape ``burstiness``. ``duration_s``: ``round(rate * duration)`` arrivals in
    ``[0, duration)``: constant spacing, or, for Poisson, sorted uniform times (a Poisson process
    conditioned on its count, so a timed step sends exactly the expected number of requests), or gamma
    gaps scaled to fill the duration. ``ramp=(from_rate, over_s)``: the rate rises from ``from_rate`` to
    ``rate`` over ``over_s`` seconds, then holds (a timed step sends ``round(L(duration))``).
    """
    rng = np.random.default_rng(seed)
    if count is None and duration_s is None:
        raise ValueError("count or duration_s is required")
    if ramp is not None or arrival == "gamma":
        line = RateLine(ramp[0], rate, ramp[1]) if ramp is not None else RateLine(rate, rate)
        total = float(line.cumulative(duration_s)) if count is None else None
        return (line.invert(_unit_arrivals(arrival, burstiness, rng, count, total)) * 1e9).astype(np.int64)
    if count is None:
        assert duration_s is not None
        n = round(rate * duration_s)
        offsets = np.arange(n) / rate if arrival == "constant" else np.sort(rng.uniform(0.0, duration_s, n))
    elif arrival == "constant":
        offsets = np.arange(count) / rate
    else:
        offsets = np.concatenate(([0.0], np.cumsum(rng.exponential(1.0 / rate, max(count - 1, 0)))))[:count]
    return (offsets * 1e9).astype(np.int64)


def step_offsets_ns(step: StepPlan, seed: int) -> list[int]:
    """Due times (ns from the step's start) of an open-loop step's sends, single requests or the
    first turns of conversations alike: ``step.warmup`` at a constant rate (the ramp's starting rate,
    if any), then the step's arrival process (its burstiness, its ramp), seeded with ``seed``."""
    warm_rate = step.ramp_from or step.value
    warm = arrival_offsets_ns(warm_rate, "constant", count=step.warmup) if step.warmup else np.empty(0, np.int64)
    ramp = (step.ramp_from, step.ramp_s) if step.ramp_from is not None and step.ramp_s is not None else None
    measured = arrival_offsets_ns(
        step.value,
        step.arrival,
        count=step.requests,
        duration_s=step.duration_s,
        seed=seed,
        burstiness=step.burstiness,
        ramp=ramp,
    )
    return np.concatenate((warm, measured + warmup_lead_ns(step))).tolist()


def warmup_lead_ns(step: StepPlan) -> int:
    """When an open-loop step's measured arrivals begin: one constant gap after its last warmup send."""
    warm_rate = step.ramp_from or step.value
    return int(step.warmup * 1e9 / warm_rate)


def ramp_starts_s(start: int, to: int, over_s: float) -> list[float]:
    """When each of ``to`` closed-loop users starts under a concurrency ramp: ``start`` at once, then one
    each time the line ``start + (to - start) t / over_s`` reaches the next whole user."""
    step = over_s / (to - start) if to > start else 0.0
    return [0.0 if j < start else (j - start + 1) * step for j in range(to)]
