"""Steady-state windows and time slices: hand-computed on made-up records, and on a short open-loop run
whose ramp the mock's settings fix in advance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from loadtest.analysis.records import RequestRecord
from loadtest.analysis.steady import Timelines, steady_view, time_windows
from loadtest.config.scenario import Scenario
from loadtest.mock import MockProcess
from loadtest.runner import execute

MS = 1_000_000


def rec(i: int, sent_ms: float, end_ms: float, warmup: bool = False, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        id=i,
        step=0,
        warmup=warmup,
        sent_ns=int(sent_ms * MS),
        end_ns=int(end_ms * MS),
        first_token_ns=int((sent_ms + 100 + 10 * i) * MS),  # TTFT 100 + 10 i ms
        chunk_times_ns=[int((sent_ms + 100 + 10 * i) * MS)],
        output_tokens=10,
        status="ok" if ok else "error",
        error_class=None if ok else "http_5xx",
    )


def arrays(records: list[RequestRecord]) -> dict:
    tl = Timelines()
    list(tl.tee(records))
    return tl.steps[0].arrays()


def test_steady_window_of_a_closed_loop_by_hand() -> None:
    # concurrency 2: one request at 0 ms, the second at 500 ms (in flight reaches 2), the last sent at 2000 ms
    a = arrays([rec(0, 0, 1000), rec(1, 500, 1500), rec(2, 1000, 2000), rec(3, 1500, 2500), rec(4, 2000, 2900)])
    steady, start, end = steady_view(a, "concurrency", 2)
    assert steady is not None and (start, end) == (500 * MS, 2000 * MS)
    assert steady["start_s"] == 0.5 and steady["end_s"] == 2.0 and steady["target_in_flight"] == 2
    assert steady["requests"] == {"sent": 4, "ok": 4, "failed": 0}  # sent at 500, 1000, 1500, 2000
    # completed inside [0.5, 2.0]: at 1000, 1500, 2000 ms: 3 in 1.5 s, 10 tokens each
    assert steady["completions"] == 3
    assert steady["request_throughput"] == pytest.approx(2.0, rel=1e-6)
    assert steady["output_token_throughput"] == pytest.approx(20.0, rel=1e-6)
    # overlaps with [0.5, 2.0]: 0.5 + 1.0 + 1.0 + 0.5 + 0 seconds in flight over 1.5 s
    assert steady["in_flight_mean"] == pytest.approx(2.0, rel=1e-6)
    assert steady["ttft_ms"]["p50"] == pytest.approx(125.0) and steady["ttft_ms"]["max"] == pytest.approx(140.0)
    assert steady["e2e_ms"]["mean"] == pytest.approx((1000 * 3 + 900) / 4)


def test_warmup_holds_slots_but_is_never_measured() -> None:
    # two warmup requests fill both slots from 0 ms; measuring starts with the first measured send at 300 ms
    a = arrays([rec(0, 0, 400, warmup=True), rec(1, 0, 450, warmup=True), rec(2, 300, 900), rec(3, 400, 1000),
                rec(4, 900, 1500)])  # fmt: skip
    steady, start, end = steady_view(a, "concurrency", 2)
    assert steady is not None and (start, end) == (300 * MS, 900 * MS) and steady["start_s"] == 0.0
    assert steady["requests"]["sent"] == 3  # the warmup requests are in flight, never counted


def test_time_slices_by_hand() -> None:
    failed_last = rec(4, 2000, 2900, ok=False)
    a = arrays([rec(0, 0, 1000), rec(1, 500, 1500), rec(2, 1000, 2000), rec(3, 1500, 2500), failed_last])
    slices = [entry for _, _, entry in time_windows(a, 1.0)]
    assert [(w["t_s"], w["complete"]) for w in slices] == [(0.0, True), (1.0, True), (2.0, False)]
    assert [w["requests"]["sent"] for w in slices] == [2, 2, 1]  # by send time
    assert [w["completions"] for w in slices] == [0, 2, 2]  # by completion time: 1000 and 1500; 2000 and 2500
    assert [w["errors"] for w in slices] == [0, 0, 1]
    assert slices[1]["request_throughput"] == pytest.approx(2.0)
    assert slices[1]["ttft_ms"] == {"p50": pytest.approx(125.0), "p95": pytest.approx(129.5)}  # sent at 1000, 1500
    assert slices[2]["duration_s"] == pytest.approx(0.9) and slices[2]["ttft_ms"] == {"p50": None, "p95": None}


@pytest.mark.timing
def test_open_loop_steady_window_starts_after_the_ramp(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    # constant 40 req/s onto requests of 50 + 31 x 5 = 205 ms: the pipeline fills in about 205 ms (8.2 in flight)
    mock = mock_server(ttft_ms=50, itl_ms=5, output_tokens=32)
    sc = Scenario.model_validate(
        {
            "name": "ramp",
            "target": {"base_url": mock.base_url},
            "workload": {"max_tokens": 32},
            "load": {"rate": [40], "arrival": "constant", "requests": 80, "window_s": 0.5},
            "server_metrics": {"enabled": False},
        }
    )
    outcome = execute(sc, "ramp.yaml", tmp_path, on_step=lambda s: None, report=False)
    (step,) = outcome.summary["steps"]
    steady = step["steady"]
    service_s, rate = 0.205, 40
    # in flight first reaches ceil(40 x E2E) = 9 when send 9 leaves, at 8 / 40 s, before send 1 completes
    assert steady["start_s"] == pytest.approx(8 / rate, abs=0.03)
    assert steady["end_s"] == pytest.approx(79 / rate, abs=0.03)  # the last of 80 sends
    assert steady["requests"]["sent"] == pytest.approx(80 - 8, abs=1)
    # once full the pipeline holds rate x E2E; the whole step's mean is diluted by the ramp and the drain
    assert steady["in_flight_mean"] == pytest.approx(rate * service_s, rel=0.1)
    assert step["in_flight"]["mean"] < steady["in_flight_mean"] - 0.3
    assert len(step["windows"]) == 5 and [w["t_s"] for w in step["windows"]] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert step["windows"][0]["in_flight_mean"] < step["windows"][2]["in_flight_mean"]  # the ramp shows
