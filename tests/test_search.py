"""Limit discovery against the rate-limited mock, and the early stop of a sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.runner import execute
from loadtest.scenario import Scenario, ScenarioError, load_scenario

from .conftest import ROOT, free_port, write

RPM, TPM = 3_000, 300_000  # the mock's limits: 50 requests/s, 5,000 tokens/s (1 s steps see ~50 requests)


def discover(tmp_path: Path, prompt: int, max_tokens: int, start: float) -> dict:
    sc = Scenario.model_validate(
        {
            "name": "search",
            "target": {
                "base_url": "mock",
                "mock": {
                    "ttft_ms": 1,
                    "itl_ms": 0,
                    "output_tokens": max_tokens,
                    "rpm": RPM,
                    "tpm": TPM,
                    "burst_s": 0.05,
                },
            },
            "workload": {"max_tokens": max_tokens, "prompt": {"synthetic": {"input_tokens": prompt}}},
            "load": {"arrival": "constant", "search": {"start_rate": start, "step_duration_s": 1, "tolerance": 0.05}},
        }
    )
    outcome = execute(sc, "search.yaml", tmp_path, on_step=lambda s: None, report=False)
    assert outcome.exit_code == 0
    summary = outcome.summary
    assert [s["index"] for s in summary["steps"]] == list(range(len(summary["steps"])))  # rebuilt from steps.jsonl
    return summary["search"]


def test_requests_bound_limit_is_found_within_10_percent(tmp_path: Path) -> None:
    found = discover(tmp_path, prompt=12, max_tokens=20, start=20)  # 32 tokens a request: the RPM binds
    assert found["binding"] == "requests"
    assert RPM * 0.9 <= found["sustainable_rpm"] <= RPM * 1.1, found
    assert found["throttled_from_rpm"] > found["sustainable_rpm"]
    assert f"advertised {RPM} requests per minute, throttled from" in found["audit"]
    assert found["advertised"]["requests"]["limit"] == RPM


def test_tokens_bound_limit_is_found_within_10_percent(tmp_path: Path) -> None:
    found = discover(tmp_path, prompt=100, max_tokens=200, start=5)  # 300 tokens a request: the TPM binds
    assert found["binding"] == "tokens"
    assert TPM * 0.9 <= found["sustainable_tokens_per_min"] <= TPM * 1.1, found
    assert TPM / 300 * 0.9 <= found["sustainable_rpm"] <= TPM / 300 * 1.1
    assert f"advertised {TPM} tokens per minute" in found["audit"]


def test_search_against_a_down_endpoint_stops_after_one_step(tmp_path: Path) -> None:
    sc = Scenario.model_validate(
        {
            "name": "down",
            "target": {"base_url": f"http://127.0.0.1:{free_port()}/v1"},
            "load": {"search": {"start_rate": 4, "step_duration_s": 0.5, "max_steps": 20}},
        }
    )
    outcome = execute(sc, "down.yaml", tmp_path, on_step=lambda s: None, report=False)
    assert outcome.exit_code == 2 and "down.yaml: target.base_url: endpoint unreachable" in (outcome.message or "")
    (step,) = outcome.summary["steps"]  # not 20 steps stepping the rate down
    assert step["requests"]["sent"] == step["errors"]["connect"] > 0


def test_sweep_stops_early_on_the_error_ceiling(tmp_path: Path) -> None:
    sc = Scenario.model_validate(
        {
            "name": "stop",
            "target": {
                "base_url": "mock",
                "mock": {"ttft_ms": 1, "itl_ms": 0, "output_tokens": 4, "faults": {"http_500": 0.5}},
            },
            "workload": {"max_tokens": 4},
            "load": {"concurrency": [1, 2, 4], "requests": 10, "stop": {"max_error_rate": 0.2}},
        }
    )
    summary = execute(sc, "stop.yaml", tmp_path, on_step=lambda s: None, report=False).summary
    assert [s["index"] for s in summary["steps"]] == [0] and summary["skipped_steps"] == [1, 2]
    assert summary["steps"][0]["error_rate"] == 0.5
    assert summary["stopped_early"] == "step 0 passed load.stop.max_error_rate (50% errors)"


def test_search_scenario_and_bad_combinations(tmp_path: Path) -> None:
    sc = load_scenario(ROOT / "scenarios" / "ratelimit-stress.yaml")
    assert sc.load.search is not None and sc.target.mock.rpm == 600 and sc.target.mock.tpm == 60_000
    for text, needle in (
        ("load: {rate: [2], search: {}}\n", "search chooses the rates itself"),
        ("load: {search: {}, workers: 2}\n", "search runs in one process"),
        ("load: {search: {factor: 1}}\n", "load.search.factor"),
    ):
        with pytest.raises(ScenarioError, match=needle):
            load_scenario(write(tmp_path / "x.yaml", text))
