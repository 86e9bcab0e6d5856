"""Capacity under SLO against the mock server with a queue (``slots``), time-compressed: 2 slots,
TTFT 20 ms, ITL 5 ms, 16 tokens, so a request holds its slot S = 20 + 15 x 5 = 95 ms and the server
carries N/S = 21 req/s. Constant arrivals (D/D/N): no request waits below N/S, and above it the
queue grows without bound, so the capacity under any TTFT bound above the unqueued TTFT is N/S
(research notes §5). tests/test_capacity.py runs the full-size 8-slot Poisson case on a virtual clock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.config.scenario import Scenario
from loadtest.mock import MockProcess
from loadtest.runner import RunOutcome, execute

SLOTS, TTFT_MS, ITL_MS, TOKENS = 2, 20, 5, 16
HOLD_S = (TTFT_MS + (TOKENS - 1) * ITL_MS) / 1e3
CAPACITY = SLOTS / HOLD_S  # 21.05 req/s


def run(tmp_path: Path, server: MockProcess, report: bool = False, **cap: Any) -> RunOutcome:
    sc = Scenario.model_validate(
        {
            "name": "capacity",
            "target": {"base_url": server.base_url},
            "workload": {"max_tokens": TOKENS, "prompt": {"synthetic": {"input_tokens": 8}}},
            "load": {
                "arrival": "constant",
                "capacity": {"over": "rate", "start": 4, "max": 64, "tolerance": 0.1, "step_duration_s": 3, **cap},
            },
            # well above the unqueued 20 ms: a client slowed by a busy machine must not break it (D/D/N
            # queues grow without bound past N/S, so the bound does not move the capacity)
            "slo": {"ttft_ms": {"p95": 150}},
        }
    )
    return execute(sc, "capacity.yaml", tmp_path, on_step=lambda s: None, report=report)


def queued(start: Callable[..., MockProcess], slots: int = SLOTS) -> MockProcess:
    return start(ttft_ms=TTFT_MS, itl_ms=ITL_MS, output_tokens=TOKENS, slots=slots)


def test_capacity_against_the_queueing_mock(tmp_path: Path, mock_server: Callable[..., MockProcess]) -> None:
    outcome = run(tmp_path, queued(mock_server))
    assert outcome.exit_code == 0, outcome.message
    cap = outcome.summary["capacity"]
    assert cap["status"] == "found", cap
    # HTTP and the client's own time lengthen a slot's hold a little: the capacity may sit a bit under N/S
    assert 0.85 * CAPACITY <= cap["value"] <= 1.1 * CAPACITY, (cap, CAPACITY)
    lo, hi = cap["interval"]
    assert lo <= CAPACITY * 1.1 and hi >= CAPACITY * 0.9, cap
    assert all(s["verdict"] == "pass" for s in cap["steps"] if s["load"] <= lo)


def test_a_step_at_three_times_capacity_ends_early(tmp_path: Path, mock_server: Callable[..., MockProcess]) -> None:
    three = 3 * CAPACITY
    outcome = run(tmp_path, queued(mock_server), True, start=three, max=three, step_duration_s=30, max_steps=1)
    step = outcome.summary["steps"][0]
    assert step["duration_s"] <= 10, step["duration_s"]
    first = outcome.summary["capacity"]["steps"][0]
    assert first["verdict"] == "fail" and first["binding"] == "saturation", first
    assert "over-saturated" in first["reason"]
    # the report opens with the answer and draws the search (the one step failed: no capacity)
    html = (outcome.run_dir / "report.html").read_text()
    assert outcome.summary["headline"].startswith("No capacity: even the lowest load tried")
    assert '<p class="headline">' in html and "Capacity under SLO" in html
