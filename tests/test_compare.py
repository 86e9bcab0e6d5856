"""compare's intervals on synthetic runs: noise shared by requests in flight together is one event."""

from __future__ import annotations

import pytest

from bench.compare_noise import closed_loop, open_loop
from loadtest.analysis.compare import compare_runs
from loadtest.analysis.summary import Run


def verdicts(base: Run, cand: Run) -> dict[str, str]:
    return {r["metric"]: r["verdict"] for r in compare_runs(base, cand)["rows"]}


def test_one_stall_in_the_baseline_is_not_an_improvement_of_the_candidate() -> None:
    # one 15 ms hiccup about 1.3 s into the baseline delays the first token of the requests waiting for
    # it: the wave sent together (closed-loop lanes stay in step)
    stalled = closed_loop(1, lambda i, t: 15.0 if 1200 <= t < 1400 else 0.0)
    slow_ttfts = sum(1 for i in range(96) if stalled.steps[0].ttft[i] > 30)
    assert 3 <= slow_ttfts <= 12, slow_ttfts  # several requests, all in flight at one moment
    got = verdicts(stalled, closed_loop(2))
    assert got["ttft_ms.p99"] == "unchanged", got
    assert set(got.values()) == {"unchanged"}, got


def test_a_tail_spread_over_the_run_is_still_a_regression() -> None:
    # every 8th request 15 ms slower to its first token, all through the run: a real p99 change
    got = verdicts(closed_loop(1), closed_loop(2, lambda i, t: 15.0 if i % 8 == 3 else 0.0))
    assert got["ttft_ms.p99"] == "regressed" and got["ttft_ms.p50"] == "unchanged", got


def test_slower_tokens_regress_throughput_and_per_token_latency() -> None:
    base = closed_loop(1)
    slower = closed_loop(2, lambda i, t: 100.0)  # TTFT +100 ms: E2E 20+310 -> 430 ms
    got = verdicts(base, slower)
    for metric in ("request_throughput", "output_token_throughput", "ttft_ms.p50", "e2e_ms.p50"):
        assert got[metric] == "regressed", (metric, got)
    assert got["itl_ms.p50"] == "unchanged" and got["tpot_ms.p50"] == "unchanged", got


def every_tenth(i: int) -> bool:
    return i % 10 == 5  # requests 5, 15, ..., 95: 10 of the first 96, 19 of 192


def ok_per_s(run: Run) -> float:
    """Successful requests / (first send to last end), from the step's own record times."""
    acc = run.steps[0]
    return acc.ok / ((max(acc.end_ns) - min(acc.sent_ns)) / 1e9)


# a closed loop long enough that the end of the step (lanes idle behind the last timeouts) is a
# small part of it, and an open loop on the seeded Poisson schedule both runs share
STEPS = {
    "closed_loop": lambda seed, **kw: closed_loop(seed, requests=192, **kw),
    "open_loop": lambda seed, **kw: open_loop(seed, **kw),
}


@pytest.mark.parametrize("step", STEPS)
def test_timeouts_that_cost_throughput_are_a_throughput_regression(step: str) -> None:
    # the same server, but every 10th request hangs for 1 s (three E2Es) and fails: fewer ok requests
    # a second. Counting only the successful requests' time in flight saw no change (closed loop) or
    # an improvement (open loop: the timeouts raise the mean in flight)
    base, cand = STEPS[step](1), STEPS[step](2, timed_out=every_tenth)
    sent = cand.summary["steps"][0]["requests"]["sent"]
    assert cand.summary["steps"][0]["requests"]["failed"] == len(range(5, sent, 10))
    assert ok_per_s(cand) < 0.85 * ok_per_s(base)
    rows = {r["metric"]: r for r in compare_runs(base, cand)["rows"]}
    for metric in ("request_throughput", "output_token_throughput"):
        assert rows[metric]["verdict"] == "regressed", rows[metric]


@pytest.mark.parametrize("step", STEPS)
def test_throughput_interval_contains_the_change_of_a_run_with_failures(step: str) -> None:
    base, cand = STEPS[step](1), STEPS[step](2, timed_out=every_tenth)
    change = ok_per_s(cand) / ok_per_s(base) - 1
    for r in compare_runs(base, cand)["rows"]:
        if r["metric"] in ("request_throughput", "output_token_throughput"):
            lo, hi = r["ci95"]
            assert r["change"] == pytest.approx(change), r
            assert lo < change < hi, r
            assert abs((lo + hi) / 2 - change) < (hi - lo) / 4, r  # centred on it, not just touching


def test_a_candidate_whose_every_request_failed_regressed() -> None:
    base, cand = closed_loop(1), closed_loop(2, timed_out=lambda i: True)
    assert cand.summary["steps"][0]["requests"] == {"sent": 96, "ok": 0, "failed": 96}
    result = compare_runs(base, cand)
    got = {r["metric"]: r["verdict"] for r in result["rows"]}
    assert got == {"request_throughput": "regressed", "output_token_throughput": "regressed"}, got
    assert not result["passed"]
