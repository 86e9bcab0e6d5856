"""compare's intervals on synthetic runs: noise shared by requests in flight together is one event."""

from __future__ import annotations

from bench.compare_noise import closed_loop
from loadtest.compare import compare_runs
from loadtest.results import Run


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
