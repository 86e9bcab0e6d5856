"""Each formula of docs/DESIGN.md §3 checked by hand on a small fixed set of records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loadtest.analysis.checks import evaluate_slos, harness_warnings
from loadtest.analysis.events import StepFinished, event_line
from loadtest.analysis.live import LiveStats
from loadtest.analysis.metrics import (
    GapHistogram,
    StepAccumulator,
    distribution,
    e2e_ms,
    in_flight,
    itl_gaps_ms,
    meets_slo,
    schedule_lag_ms,
    step_duration_s,
    summarize_step,
    tpot_ms,
    ttft_ms,
)
from loadtest.analysis.records import RequestRecord
from loadtest.analysis.summary import merge_loop_lag
from loadtest.config.scenario import SLO, PerRequestSLO
from loadtest.config.steps import StepPlan

MS = 1_000_000


def rec(i: int, sent: int, chunks: list[int], end: int, out: int | None, inp: int = 10, **kw: object) -> RequestRecord:
    """Times in ms for readability."""
    return RequestRecord(
        id=i,
        step=0,
        sent_ns=sent * MS,
        chunk_times_ns=[c * MS for c in chunks],
        first_token_ns=chunks[0] * MS if chunks else None,
        last_token_ns=chunks[-1] * MS if chunks else None,
        end_ns=end * MS,
        input_tokens=inp,
        output_tokens=out,
        tokens_source="usage",
        **kw,
    )  # type: ignore[arg-type]


# A: TTFT 100, gaps 20 and 30, E2E 160, 3 tokens -> TPOT (160-100)/2 = 30
# B: TTFT 50, gaps 10, 10, 10, E2E 100, 4 tokens -> TPOT (100-50)/3 = 16.666..
# C: failed (http_5xx) after 40 ms; D: warmup, excluded; E: failed (timeout) at t=1000 (defines the end)
A = rec(0, 0, [100, 120, 150], 160, 3)
B = rec(1, 200, [250, 260, 270, 280], 300, 4, inp=20)
C = rec(2, 400, [], 440, None, status="error", error_class="http_5xx", http_status=503)
D = rec(3, 0, [10, 20], 30, 2, warmup=True)
E = rec(4, 500, [], 1000, None, status="error", error_class="timeout")
STEP = [A, B, C, D, E]
MEASURED = [A, B, C, E]


def test_per_request_formulas() -> None:
    assert ttft_ms(A) == 100 and ttft_ms(B) == 50 and ttft_ms(C) is None
    assert e2e_ms(A) == 160 and e2e_ms(B) == 100
    assert list(itl_gaps_ms(A)) == [20, 30] and list(itl_gaps_ms(B)) == [10, 10, 10]
    assert tpot_ms(A) == 30 and tpot_ms(B) == pytest.approx(50 / 3)
    assert tpot_ms(rec(9, 0, [5], 9, 1)) is None  # one output token: no TPOT
    assert (
        tpot_ms(RequestRecord(id=9, step=0, stream=False, sent_ns=0, first_token_ns=5, end_ns=5, output_tokens=5))
        is None
    )


def sent_end(records: list[RequestRecord]) -> tuple[list[int], list[int]]:
    return [r.sent_ns for r in records], [r.end_ns for r in records]


def test_step_duration_and_throughputs() -> None:
    assert step_duration_s(*sent_end(MEASURED)) == 1.0  # first measured send 0 ms, last completion 1000 ms
    assert step_duration_s([], []) == 0.0
    s = summarize_step(STEP, index=0, mode="concurrency", value=4)
    assert s["request_throughput"] == 2.0  # A and B succeeded in 1 s
    assert s["output_token_throughput"] == 7.0  # 3 + 4
    assert s["total_token_throughput"] == 37.0  # (10 + 3) + (20 + 4)
    assert summarize_step([], index=0, mode="rate", value=1.0)["request_throughput"] == 0.0


def test_percentiles_are_numpy_linear() -> None:
    d = distribution([1, 2, 3, 4])
    assert d["p50"] == 2.5 and d["p90"] == pytest.approx(3.7) and d["p99"] == pytest.approx(3.97)
    assert d["mean"] == 2.5 and d["max"] == 4 and d["stddev"] == pytest.approx(1.118033988)
    assert distribution([])["p50"] is None


def test_goodput_and_errors() -> None:
    assert [meets_slo(r, PerRequestSLO(ttft_ms=80)) for r in MEASURED] == [False, True, False, False]
    assert [meets_slo(r, PerRequestSLO(tpot_ms=20, e2e_ms=150)) for r in MEASURED] == [False, True, False, False]
    assert [meets_slo(r, PerRequestSLO()) for r in MEASURED] == [True, True, False, False]
    s = summarize_step(STEP, index=0, mode="concurrency", value=4, per_request_slo=PerRequestSLO(ttft_ms=80))
    assert s["goodput"] == 1.0 and s["goodput_ratio"] == 0.25  # B only, over 1 s; 1 of 4 sent
    assert summarize_step(STEP, index=0, mode="concurrency", value=4)["goodput"] == 2.0  # no SLO: every ok one
    assert s["errors"] == {"http_5xx": 1, "timeout": 1}


def test_schedule_lag() -> None:
    r = rec(5, 105, [120], 130, 1, scheduled_ns=100 * MS)
    assert schedule_lag_ms(r) == 5 and schedule_lag_ms(A) is None


def test_in_flight_max_and_mean() -> None:
    # A [0,160), B [200,300), C [400,440), E [500,1000): never overlapping -> max 1; busy 800 of 1000 ms
    assert in_flight(*sent_end(MEASURED)) == {"max": 1, "mean": pytest.approx(0.8)}
    overlapping = [rec(0, 0, [1], 100, 1), rec(1, 50, [60], 150, 1), rec(2, 60, [70], 80, 1)]
    assert in_flight(*sent_end(overlapping))["max"] == 3
    back_to_back = [rec(0, 0, [1], 100, 1), rec(1, 100, [110], 200, 1)]  # one ends as the next starts
    assert in_flight(*sent_end(back_to_back))["max"] == 1


def test_accumulator_streams_records_in_any_order() -> None:
    acc = StepAccumulator()
    for r in reversed(STEP):
        acc.add(r)
    assert acc.summary(index=0, mode="concurrency", value=4) == summarize_step(
        STEP, index=0, mode="concurrency", value=4
    )


def test_summarize_step_pools_itl_and_excludes_warmup() -> None:
    s = summarize_step(STEP, index=0, mode="concurrency", value=4, per_request_slo=PerRequestSLO(ttft_ms=80))
    assert s["requests"] == {"sent": 4, "ok": 2, "failed": 2} and s["warmup_requests"] == 1
    assert s["errors"] == {"http_5xx": 1, "timeout": 1} and s["error_rate"] == 0.5
    assert s["duration_s"] == 1.0 and s["request_throughput"] == 2.0 and s["output_token_throughput"] == 7.0
    # ITL pooled over all gaps of all ok requests: [20, 30, 10, 10, 10]
    assert s["itl_ms"]["p50"] == 10 and s["itl_ms"]["mean"] == 16 and s["itl_ms"]["max"] == 30
    assert s["ttft_ms"]["p50"] == 75 and s["e2e_ms"]["max"] == 160
    assert s["tpot_ms"]["mean"] == pytest.approx((30 + 50 / 3) / 2)
    assert s["goodput"] == 1.0 and s["goodput_ratio"] == 0.25
    assert s["schedule_lag_ms"] is None and s["tokens_source"] == {"usage": 2}


def test_slo_verdicts() -> None:
    s = summarize_step(STEP, index=0, mode="concurrency", value=4)
    slo = SLO.model_validate(
        {"ttft_ms": {"p50": 80, "max": 200}, "error_rate": {"max": 0.1}, "output_tokens_per_s": {"min": 5}}
    )
    v = {(x["slo"], x["stat"]): x for x in evaluate_slos(s, slo)}
    assert v[("ttft_ms", "p50")]["ok"] is True and v[("ttft_ms", "max")]["ok"] is True
    assert v[("error_rate", "max")]["ok"] is False and v[("error_rate", "max")]["measured"] == 0.5
    assert v[("output_tokens_per_s", "min")]["ok"] is True
    empty = summarize_step([C], index=1, mode="rate", value=2.0)
    assert evaluate_slos(empty, SLO.model_validate({"ttft_ms": {"p50": 1}}))[0]["ok"] is False


def test_live_stats_bounded_and_exact_below_the_reservoir() -> None:
    live = LiveStats()
    for r in STEP:
        live.add(r)
    line = live.line(index=0, mode="concurrency", value=4)
    full = summarize_step(STEP, index=0, mode="concurrency", value=4)
    for key in ("requests", "errors", "request_throughput", "output_token_throughput"):
        assert line[key] == full[key], key
    assert line["ttft_ms"]["p50"] == full["ttft_ms"]["p50"]
    many = LiveStats(seed=1)
    for i in range(20_000):
        many.add(rec(i, i, [i + 1 + i % 100], i + 200, 2))  # TTFT 1..100 ms, uniform
    assert many._kept == LiveStats.RESERVOIR and many.sent == 20_000
    assert 45 <= many.line(index=0, mode="rate", value=1.0)["ttft_ms"]["p50"] <= 56


@pytest.mark.parametrize("n", [150_000, 20_000])  # past HOLD: dense counts; within it: held gaps, sorted
def test_gap_histogram_equals_numpy_on_microsecond_gaps(n: int) -> None:
    rng = np.random.default_rng(3)
    gaps_ms = np.concatenate((rng.gamma(4.0, 2.5, n), rng.uniform(262, 5000, 300), [0.0, 0.0004]))
    gaps_ns = np.rint(gaps_ms * 1e6).astype(np.int64)  # chunk times are integer ns
    h = GapHistogram()
    for i, chunk in enumerate(np.array_split(gaps_ns, 997)):  # as requests add them: each one's chunk times
        start = i * 10**13  # far apart: a gap across two requests would be a 10,000-s outlier
        h.add_times_ns(np.concatenate(([start], start + np.cumsum(chunk))).tolist())
    got = h.distribution()
    us_ms = np.rint(gaps_ns / 1e3) / 1e3  # the definition: gaps rounded to the microsecond
    want = distribution(us_ms)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-9), k
    if n > GapHistogram.HOLD:
        assert h.dense is not None and h.dense.nbytes == GapHistogram.DENSE_US * 8  # bounded, whatever the count
        assert h._held_n <= GapHistogram.HOLD
    else:
        assert h.dense is None  # a step's worth of gaps: no 2-MB array
    ranked = np.sort(us_ms)
    assert h.quantiles_ms(np.array([0.5, 0.99])).tolist() == [ranked[len(ranked) // 2], ranked[len(ranked) * 99 // 100]]
    assert GapHistogram().distribution()["p50"] is None


def test_one_late_wake_up_is_a_hiccup_two_are_a_busy_client() -> None:
    def warned(p99: float, late: int | None) -> bool:
        step = {"loop_lag_ms": {"p99": p99, "late": late}}
        return any(w.startswith("client bottleneck: event-loop lag") for w in harness_warnings(step))

    assert not warned(4.0, 0) and not warned(12.0, 1)  # a short step: p99 is its one worst wake-up
    assert warned(12.0, 2) and warned(6.0, 40)
    assert warned(12.0, None)  # steps.jsonl from before the count: the p99 alone, as then


def test_loop_lag_lines_count_late_wake_ups_and_merge_the_worst_worker() -> None:
    def line(lags: tuple[float, ...], worker: int) -> dict:
        plan = StepPlan(index=0, mode="concurrency", value=2, requests=4, duration_s=None, warmup=0)
        done = StepFinished(step=plan, t_ns=1, started_ns=0, worker=worker, loop_lag_ms=lags)
        return json.loads(event_line(done)[1])

    a, b = line((0.1, 6.0, 0.2, 7.5), 0), line((9.0, 0.1, 0.1, 0.1), 1)
    assert a["loop_lag_ms"]["late"] == 2 and b["loop_lag_ms"]["late"] == 1
    merged = merge_loop_lag([a, b])
    assert merged["late"] == 2 and merged["max"] == 9.0
    assert merge_loop_lag([a, {"loop_lag_ms": {**b["loop_lag_ms"], "late": None}}])["late"] is None
