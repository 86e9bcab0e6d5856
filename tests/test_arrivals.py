"""Gamma arrivals (vLLM's burstiness) and load ramps: pure checks on the offsets, then short runs against the mock."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadtest.config.scenario import Scenario
from loadtest.config.steps import plan_steps
from loadtest.mock import MockProcess
from loadtest.output.rundir import read_records
from loadtest.runner import execute
from loadtest.workload.arrivals import arrival_offsets_ns, ramp_starts_s

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def mock_log(base_url: str) -> list[dict[str, Any]]:
    with _DIRECT.open(base_url.removesuffix("/v1") + "/mock/requests", timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 4.0])
def test_gamma_gaps_have_the_cv_of_their_burstiness(burstiness: float) -> None:
    rate = 20.0
    gaps = np.diff(arrival_offsets_ns(rate, "gamma", count=5001, burstiness=burstiness, seed=7)) / 1e9
    assert len(gaps) == 5000
    cv = gaps.std() / gaps.mean()
    assert abs(cv - 1 / np.sqrt(burstiness)) <= 0.10 / np.sqrt(burstiness), cv  # within 10% of 1/sqrt(b)
    assert abs(gaps.mean() - 1 / rate) <= 0.05 / rate  # the mean gap is 1/rate whatever the burstiness


def test_gamma_in_a_timed_step_sends_the_expected_count_over_the_step() -> None:
    offsets = arrival_offsets_ns(10.0, "gamma", duration_s=30.0, burstiness=0.3, seed=1) / 1e9
    assert len(offsets) == 300 and offsets[0] == 0.0
    assert np.all(np.diff(offsets) >= 0) and 29.0 < offsets[-1] < 30.0  # spread over the step, inside it
    again = arrival_offsets_ns(10.0, "gamma", duration_s=30.0, burstiness=0.3, seed=1) / 1e9
    assert np.array_equal(offsets, again)  # seeded
    other = arrival_offsets_ns(10.0, "gamma", duration_s=30.0, burstiness=0.3, seed=2) / 1e9
    assert not np.array_equal(offsets, other)


def _line_counts(r0: float, r1: float, over_s: float, seconds: int) -> np.ndarray:
    """Requests the ramp's line promises in each second, by hand: the area under it (a trapezoid)."""
    rate = [r0 + (r1 - r0) * min(t, over_s) / over_s for t in range(seconds + 1)]
    return np.array([(rate[s] + rate[s + 1]) / 2 for s in range(seconds)])


@pytest.mark.parametrize("arrival", ["constant", "poisson", "gamma"])
def test_a_rate_ramp_tracks_its_line_within_5_percent_each_second(arrival: str) -> None:
    # high rates so that a random process's own noise (sqrt(n)/n) stays well inside 5% per second
    r0, r1, over_s, seconds = 20_000.0, 80_000.0, 4.0, 6
    offsets = arrival_offsets_ns(r1, arrival, duration_s=seconds, seed=3, ramp=(r0, over_s), burstiness=4.0) / 1e9
    counts, _ = np.histogram(offsets, bins=np.arange(seconds + 1))
    want = _line_counts(r0, r1, over_s, seconds)
    assert np.all(np.abs(counts - want) <= 0.05 * want), (counts, want)
    assert abs(len(offsets) - want.sum()) <= 1


def test_a_ramp_down_and_a_ramp_from_zero_track_their_lines() -> None:
    for r0, r1 in ((500.0, 100.0), (0.0, 400.0)):
        offsets = arrival_offsets_ns(r1, "constant", count=2000, ramp=(r0, 3.0)) / 1e9
        counts, _ = np.histogram(offsets, bins=np.arange(4))
        want = _line_counts(r0, r1, 3.0, 3)
        assert np.all(np.abs(counts - want) <= 0.05 * want + 1), (r0, r1, counts, want)


def test_concurrency_ramp_starts_users_along_the_line() -> None:
    # 2 users at once, then one each time 2 + (6 - 2) t / 8 s passes a whole number: t = 2, 4, 6, 8
    assert ramp_starts_s(2, 6, 8.0) == [0.0, 0.0, 2.0, 4.0, 6.0, 8.0]


def _scenario(base_url: str, load: dict[str, Any]) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "ramp",
            "target": {"base_url": base_url, "timeout_s": 20},
            "workload": {"prompt": {"synthetic": {"input_tokens": 8}}, "max_tokens": 2},
            "load": load,
        }
    )


@pytest.mark.timing
def test_a_rate_ramp_delivers_its_line_at_the_server(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=2, request_log=1000)
    load = {"ramp": {"from": 40, "to": 120, "over_s": 2}, "arrival": "constant", "duration_s": 3}
    outcome = execute(_scenario(mock.base_url, load), "ramp.yaml", tmp_path, on_step=lambda s: None, report=False)
    (step,) = outcome.summary["steps"]
    want = _line_counts(40, 120, 2, 3)  # 60, 100, 120 requests
    assert step["requests"] == {"sent": int(want.sum()), "ok": int(want.sum()), "failed": 0}
    received = np.array([e["t"] for e in mock_log(mock.base_url)])
    counts, _ = np.histogram(received - received[0], bins=np.arange(4))  # seconds since the first arrival
    assert np.all(np.abs(counts - want) <= 0.05 * want), (counts, want)


@pytest.mark.timing
def test_a_concurrency_ramp_adds_users_one_by_one(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    mock = mock_server(ttft_ms=40, itl_ms=0, output_tokens=2)
    load = {"ramp": {"from": 1, "to": 4, "over_s": 0.9, "of": "concurrency"}, "duration_s": 1.5}
    sc = _scenario(mock.base_url, load)
    (plan,) = plan_steps(sc.load)
    assert (plan.mode, plan.value, plan.ramp_from, plan.ramp_s) == ("concurrency", 4.0, 1.0, 0.9)
    outcome = execute(sc, "ramp.yaml", tmp_path, on_step=lambda s: None, report=False)
    records = list(read_records(outcome.run_dir / "requests.jsonl"))
    t0 = min(r.sent_ns for r in records)

    def in_flight(t: int) -> int:
        return sum(r.sent_ns <= t < r.end_ns for r in records)

    # users join at 0.3, 0.6, 0.9 s: before each join at most that many were sending, after the last all 4
    for users, joins_s in ((1, 0.3), (2, 0.6), (3, 0.9)):
        busy = [in_flight(r.sent_ns) for r in records if r.sent_ns - t0 < joins_s * 1e9 - 5e6]
        assert max(busy) == users, (users, busy)
    late = [in_flight(r.sent_ns) for r in records if r.sent_ns - t0 > 1.0e9]
    assert max(late) == 4
