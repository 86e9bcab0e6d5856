from __future__ import annotations

import pytest

from loadtest.config.steps import StepPlan
from loadtest.engine.shard import apportion, shard_step


@pytest.mark.parametrize(
    ("total", "weights"), [(10, [1, 1, 1]), (7, [3, 0, 1]), (0, [1, 1]), (5, [1] * 8), (100, [2, 1])]
)
def test_apportion_sums_and_is_proportional(total: int, weights: list[float]) -> None:
    parts = apportion(total, weights)
    assert sum(parts) == total and len(parts) == len(weights)
    for p, w in zip(parts, weights, strict=True):
        assert abs(p - total * w / sum(weights)) < 1
        assert w > 0 or p == 0


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_closed_loop_shards_add_up(n: int) -> None:
    step = StepPlan(index=0, mode="concurrency", value=4, requests=101, duration_s=None, warmup=3)
    parts = [shard_step(step, n, i) for i in range(n)]
    assert sum(p.value for p in parts) == 4
    assert sum(p.requests or 0 for p in parts) == 101 and sum(p.warmup for p in parts) == 3
    assert all(p.requests == 0 and p.warmup == 0 for p in parts if p.value == 0)  # no connections, no requests


def test_open_loop_shards_split_the_rate() -> None:
    step = StepPlan(index=1, mode="rate", value=30.0, requests=None, duration_s=5.0, warmup=0, max_concurrency=10)
    parts = [shard_step(step, 3, i) for i in range(3)]
    assert [p.value for p in parts] == [10.0, 10.0, 10.0] and all(p.duration_s == 5.0 for p in parts)
    assert sum(p.max_concurrency for p in parts) == 10
