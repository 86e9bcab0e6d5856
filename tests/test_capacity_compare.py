"""Nightly on capacity: two capacity searches, the candidate against a mock with 6 slots instead of
8, compared by the CLI (in-process): the candidate's capacity interval lies wholly below the
baseline's, so compare says regressed and exits 1; history tracks both capacities. Time-compressed:
each request holds a slot S = 20 + 15 x 10 = 170 ms, so the mocks carry 8/S = 47 and 6/S = 35 req/s;
1-s steps, an unsure one re-run once (2 s). A 1-s step a little past N/S has not queued up to the
bound yet (at 1.08 N/S the last request waits 80 ms): the capacities may read up to ~10% high.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.config.scenario import Scenario
from loadtest.mock import MockProcess
from loadtest.runner import execute

HOLD_S = (20 + 15 * 10) / 1e3


def capacity_run(tmp_path: Path, server: MockProcess) -> Path:
    sc = Scenario.model_validate(
        {
            "name": "nightly-capacity",
            "target": {"base_url": server.base_url},
            "workload": {"max_tokens": 16, "prompt": {"synthetic": {"input_tokens": 8}}},
            "load": {
                "arrival": "constant",
                "warmup_requests": 8,  # each step opens its connections before it is measured
                "capacity": {
                    "over": "rate",
                    "start": 20,
                    "max": 128,
                    "tolerance": 0.1,
                    "step_duration_s": 1,
                    "lengthen": 1,
                },
            },
            "slo": {"ttft_ms": {"p95": 100}},
        }
    )
    outcome = execute(sc, "nightly-capacity.yaml", tmp_path, on_step=lambda s: None, report=False)
    assert outcome.exit_code == 0, outcome.message
    return outcome.run_dir


@pytest.mark.timing
def test_compare_of_capacity_runs_6_vs_8_slots_regressed(
    tmp_path: Path, mock_server: Callable[..., MockProcess]
) -> None:
    base = capacity_run(tmp_path, mock_server(ttft_ms=20, itl_ms=10, output_tokens=16, slots=8))
    cand = capacity_run(tmp_path, mock_server(ttft_ms=20, itl_ms=10, output_tokens=16, slots=6))
    done = CliRunner().invoke(app, ["compare", str(base), str(cand)])  # in-process: no interpreter to start
    assert done.exit_code == 1, done.output
    result = json.loads((cand / "compare.json").read_text())
    row = next(r for r in result["rows"] if r["metric"] == "capacity")
    assert row["verdict"] == "regressed", row
    assert row["candidate_interval"][1] < row["baseline_interval"][0]
    # each capacity near its mock's own N/S (HTTP lengthens a slot's hold a little)
    assert 0.8 * 8 / HOLD_S <= row["baseline"] <= 1.1 * 8 / HOLD_S, row
    assert 0.8 * 6 / HOLD_S <= row["candidate"] <= 1.1 * 6 / HOLD_S, row
    for (lo, hi), slots in ((row["baseline_interval"], 8), (row["candidate_interval"], 6)):
        assert lo <= slots / HOLD_S * 1.1 and hi >= slots / HOLD_S * 0.9, (row, slots)  # N/S inside, nearly
    assert [r for r in result["regressed"]] == [row]  # the steps past capacity do not gate
    hist = CliRunner().invoke(app, ["history", "nightly-capacity", "--results", str(tmp_path)])
    assert hist.exit_code == 0, hist.output
    assert hist.output.count("capacity ") >= 2, hist.output
    assert (tmp_path / "nightly-capacity" / "history" / "capacity.png").is_file()
