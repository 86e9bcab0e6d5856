"""Over-saturation against the mock server with a queue (``slots``), time-compressed: 2 slots,
TTFT 20 ms, ITL 5 ms, 16 tokens, so a request holds its slot S = 20 + 15 x 5 = 95 ms and the server
carries N/S = 21 req/s. Constant arrivals (D/D/N): above N/S the queue grows without bound, by
exactly (rate - N/S) a second (research notes §5). A whole search against the mock runs in
test_capacity_compare.py; the full-size 8-slot Poisson case in tests/test_capacity.py (virtual clock)
and `make capacity` (for real).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtest.config.scenario import Scenario
from loadtest.mock import MockProcess
from loadtest.output.htmlreport import write_report
from loadtest.output.rundir import load_run
from loadtest.runner import RunOutcome, execute
from tests.conftest import mock_stats

SLOTS, TTFT_MS, ITL_MS, TOKENS = 2, 20, 5, 16
HOLD_S = (TTFT_MS + (TOKENS - 1) * ITL_MS) / 1e3
CAPACITY = SLOTS / HOLD_S  # 21.05 req/s


def run(
    tmp_path: Path, server: MockProcess, p95_ms: float = 100, more: dict[str, Any] | None = None, **cap: Any
) -> RunOutcome:
    """A capacity search against ``server`` (``cap`` over the defaults below; ``more``: other sections)."""
    sc = Scenario.model_validate(
        {
            "name": "capacity",
            "target": {"base_url": server.base_url},
            "workload": {"max_tokens": TOKENS, "prompt": {"synthetic": {"input_tokens": 8}}},
            "load": {
                "arrival": "constant",
                "capacity": {"over": "rate", "start": 16, "max": 64, "tolerance": 0.1, "step_duration_s": 1.5, **cap},
            },
            # well above the unqueued 20 ms: a client slowed by a busy machine must not break it (D/D/N
            # queues grow without bound past N/S, so the bound barely moves the capacity: 10% past N/S,
            # a 1.5-s step's last request waits 0.14 s)
            "slo": {"ttft_ms": {"p95": p95_ms}},
            **(more or {}),
        }
    )
    return execute(sc, "capacity.yaml", tmp_path, on_step=lambda s: None, report=False)


def queued(start: Callable[..., MockProcess], slots: int = SLOTS) -> MockProcess:
    return start(ttft_ms=TTFT_MS, itl_ms=ITL_MS, output_tokens=TOKENS, slots=slots)


@pytest.mark.timing
def test_a_step_at_three_times_capacity_ends_early(tmp_path: Path, mock_server: Callable[..., MockProcess]) -> None:
    three = 3 * CAPACITY
    outcome = run(tmp_path, queued(mock_server), start=three, max=three, step_duration_s=30, max_steps=1)
    step = outcome.summary["steps"][0]
    assert step["duration_s"] <= 10, step["duration_s"]
    first = outcome.summary["capacity"]["steps"][0]
    assert first["verdict"] == "fail" and first["binding"] == "saturation", first
    assert "over-saturated" in first["reason"]
    # the report opens with the answer and draws the search (the one step failed: no capacity); rendered
    # from the files, as `loadtest report` does (the run itself skipped it)
    html = write_report([load_run(outcome.run_dir)], outcome.run_dir).read_text()
    assert outcome.summary["headline"].startswith("No capacity: even the lowest load tried")
    assert '<p class="headline">' in html and "Capacity under SLO" in html


@pytest.mark.timing
def test_the_servers_growing_queue_ends_a_step_that_in_flight_alone_would_not(
    tmp_path: Path, mock_server: Callable[..., MockProcess]
) -> None:
    """At 1.25x N/S (constant arrivals) the mock's queue grows by 0.25 N/S = 5.3 requests a second:
    in flight rises at only 0.2 of the send rate, under the in-flight watch's 0.3, so without the
    server's gauge the step would run its whole 12 s. Its /metrics (vllm:num_requests_waiting,
    scraped every 0.25 s) ends it early with the waiting count's reason."""
    server = queued(mock_server)
    rate = 1.25 * CAPACITY
    more = {"server_metrics": {"interval_s": 0.25}}
    outcome = run(tmp_path, server, 150, more, start=rate, max=rate, step_duration_s=12, max_steps=1)
    step = outcome.summary["steps"][0]
    assert step["duration_s"] <= 9, step["duration_s"]
    row = outcome.summary["capacity"]["steps"][0]
    assert row["verdict"] == "fail" and row["binding"] == "saturation", row
    assert "waiting requests grew" in row["reason"], row
    # the queue the reason read was the mock's own: it held at least MIN_RISE (8) waiting at once
    assert mock_stats(server.base_url)["waiting_max"] >= 8
    steps_line = (outcome.run_dir / "steps.jsonl").read_text()
    assert "waiting requests grew" in steps_line
