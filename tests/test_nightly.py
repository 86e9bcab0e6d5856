"""Nightly checks: baseline comparison with confidence intervals, SLO gates, JUnit, history."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from loadtest.config.scenario import Scenario
from loadtest.runner import execute
from tests.conftest import run_cli, write

REGRESSIONS = {"tpot_ms.p50", "itl_ms.p50", "output_token_throughput"}


def mock_run(out: Path, itl_ms: float, seed: int) -> Path:
    sc = Scenario.model_validate(
        {
            "name": "nightly",
            "target": {
                "base_url": "mock",
                "mock": {"ttft_ms": 20, "itl_ms": itl_ms, "jitter_ms": 2, "output_tokens": 32, "seed": seed},
            },
            "workload": {"max_tokens": 32, "seed": seed},
            "load": {"concurrency": [8], "requests": 96, "warmup_requests": 8},
        }
    )
    return execute(sc, "nightly.yaml", out, on_step=lambda s: None, report=False).run_dir


@pytest.mark.timing
def test_same_settings_compare_unchanged_and_slower_itl_regresses(tmp_path: Path) -> None:
    out = tmp_path / "results"
    base, same, slow = mock_run(out, 10, 1), mock_run(out, 10, 2), mock_run(out, 13, 3)
    r = run_cli("compare", str(base), str(same), "--tolerance", "5%", "--junit", str(tmp_path / "same.xml"))
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads((same / "compare.json").read_text())
    assert len(result["rows"]) == 10 and {x["verdict"] for x in result["rows"]} == {"unchanged"}, [
        (x["metric"], x["change"], x["ci95"]) for x in result["rows"] if x["verdict"] != "unchanged"
    ]
    r = run_cli("compare", str(base), str(slow), "--junit", str(tmp_path / "slow.xml"))
    assert r.returncode == 1
    result = json.loads((slow / "compare.json").read_text())
    regressed = {x["metric"] for x in result["rows"] if x["verdict"] == "regressed"}
    assert regressed >= REGRESSIONS, regressed
    suite = ET.parse(tmp_path / "slow.xml").getroot()
    failures = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert int(suite.get("failures")) == len(failures) >= 3
    assert any("TPOT p50 regressed" in (tc.find("failure").get("message") or "") for tc in failures)
    md = (slow / "compare.md").read_text()
    assert "regression" in md and "| concurrency=8 | TPOT p50 |" in md
    history = [json.loads(x) for x in (out / "nightly" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 3 and history[0]["steps"][0]["value"] == 8
    r = run_cli("history", "nightly", "--results", str(out))
    assert r.returncode == 0 and "3 runs" in r.stdout
    assert len(list((out / "nightly" / "history").glob("*.png"))) == 8


def test_impossible_slo_exits_1_naming_it_and_junit_has_the_failure(tmp_path: Path) -> None:
    sc = write(
        tmp_path / "slo.yaml",
        "name: gate\ntarget: {base_url: mock, mock: {ttft_ms: 5, itl_ms: 1, output_tokens: 8}}\n"
        "workload: {max_tokens: 8}\nload: {concurrency: [1, 2], requests: 6}\n"
        "slo: {ttft_ms: {p50: 1000}, steps: {1: {ttft_ms: {p50: 0.001}}}}\n",
    )
    junit = tmp_path / "slo.xml"
    r = run_cli("run", str(sc), "--out", str(tmp_path / "out"), "--junit", str(junit))
    assert r.returncode == 1
    assert "SLO failed: step 1 (2): ttft_ms p50 =" in r.stdout and "bound max 0.001" in r.stdout
    suite = ET.parse(junit).getroot()
    failed = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert len(failed) == 1 and "ttft_ms p50 =" in failed[0].find("failure").get("message")
    assert "step 1 (2)" in failed[0].get("name") and int(suite.get("tests")) == 3 + 2  # 3 bounds, 2 steps


def test_unwritable_junit_path_is_a_one_line_error(tmp_path: Path) -> None:
    sc = write(
        tmp_path / "j.yaml",
        "target: {base_url: mock, mock: {ttft_ms: 1, itl_ms: 0, output_tokens: 4}}\n"
        "workload: {max_tokens: 4}\nload: {requests: 2}\n",
    )
    r = run_cli(
        "run", str(sc), "--out", str(tmp_path / "out"), "--no-report", "--junit", str(tmp_path / "no" / "x.xml")
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "no/x.xml" in lines[0], r.stderr
    assert len(list((tmp_path / "out").glob("*/*/requests.jsonl"))) == 1  # the run itself is kept
