"""Limit discovery against the rate-limited mock server, and the early stop of a sweep.

The limit-discovery tests compress time: the mock's limiter runs with ``ratelimit_minute_s: 3``,
so its "minute" lasts 3 s. The buckets keep the real shape (each holds a whole minute's allowance,
as OpenAI documents) and refill 20 times faster, so a probe of full-period buckets takes seconds.
The limits (60 requests and 6,000 tokens per such minute) are 20 requests/s and 2,000 tokens/s,
in buckets of 60 requests and 6,000 tokens. tests/test_limitprobe.py runs the same probes at full
size (600 RPM, 60,000 TPM, default settings) on a virtual clock; the README gives measured runs.
Figures are checked against the mock's configuration and its own counts (/mock/stats).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtest.config.loading import load_scenario
from loadtest.config.scenario import Scenario, ScenarioError
from loadtest.mock import MockProcess
from loadtest.output.rundir import read_records
from loadtest.runner import RunOutcome, execute
from tests.conftest import ROOT, free_port, mock_stats, write

MINUTE_S = 3.0  # how long the mock limiter's minute lasts
# Margins: each test below ran 5 times beside a busy core (`python -c "while True: pass"`) on a 2-core VM
# that other test suites were loading too (load average 6-8); the worst error of each figure, against the
# truth, is noted at its assertion ("measured ...").
RPM, TPM = 60, 6_000  # per such minute
REFILL_RPS, REFILL_TPS = RPM / MINUTE_S, TPM / MINUTE_S  # 20 requests/s, 2,000 tokens/s
PROMPT = 12
SEARCH = {"start_rate": 5, "max_rate": 80, "step_duration_s": 1, "steady_s": 3}


def discover(
    tmp_path: Path, server: MockProcess, max_tokens: int, report: bool = False, **search: Any
) -> tuple[dict[str, Any], RunOutcome]:
    sc = Scenario.model_validate(
        {
            "name": "search",
            "target": {"base_url": server.base_url},
            "workload": {"max_tokens": max_tokens, "prompt": {"synthetic": {"input_tokens": PROMPT}}},
            "load": {"search": {**SEARCH, **search}},
        }
    )
    outcome = execute(sc, "search.yaml", tmp_path, on_step=lambda s: None, report=report)
    assert outcome.exit_code == 0, outcome.message
    summary = outcome.summary
    assert [s["index"] for s in summary["steps"]] == list(range(len(summary["steps"])))  # rebuilt from steps.jsonl
    return summary["search"], outcome


def limited(start: Callable[..., MockProcess], max_tokens: int, **mock: Any) -> MockProcess:
    limits = {"rpm": RPM, "tpm": TPM, "ratelimit_minute_s": MINUTE_S, **mock}
    return start(ttft_ms=1, itl_ms=0, output_tokens=max_tokens, **limits)


def near(value: float | None, truth: float, within: float) -> bool:
    return value is not None and abs(value - truth) <= within * truth


@pytest.mark.timing
def test_requests_bound_full_period_buckets(tmp_path: Path, mock_server: Callable[..., MockProcess]) -> None:
    server = limited(mock_server, 16)  # 28 tokens a request: 560 tokens/s at the request limit, the RPM binds
    found, outcome = discover(tmp_path, server, 16, report=True)
    assert near(found["sustainable_rate_rps"], REFILL_RPS, 0.10), found  # measured within 0.4%
    assert near(found["sustainable_rpm"], REFILL_RPS * 60, 0.10)
    assert near(found["burst_requests"], RPM, 0.15), found  # a whole minute's allowance; measured: exact
    assert near(found["from_429s"]["burst_requests"], RPM, 0.15)  # the same from 429s alone; measured within 2.1%
    assert found["binding"] == "requests" and found["evidence"] == "both"
    assert found["verified_s"] >= 0.9 * SEARCH["steady_s"] and found["first_429_s"] is not None
    assert near(found["from_headers"]["requests"]["refill_per_s"], REFILL_RPS, 0.10)  # measured within 1.8%
    assert found["from_headers"]["requests"]["capacity"] == RPM
    assert found["throttled_from_rpm"] > found["sustainable_rpm"]
    assert f"advertised {RPM} requests per minute" in found["audit"] and "binding: requests" in found["verdict"]
    assert (outcome.run_dir / "plots" / "ratelimit.png").stat().st_size > 10_000
    page = (outcome.run_dir / "report.html").read_text()
    assert "burst capacity" in page and "steady state, whose windows (shaded)" in page
    # the records the figures rest on are what the mock itself counted
    stats = mock_stats(server.base_url)
    records = list(read_records(outcome.run_dir / "requests.jsonl"))
    assert stats["throttled"] == sum(r.error_class == "http_429" for r in records) > 0
    assert stats["requests"] == sum(r.http_status == 200 for r in records)


@pytest.mark.timing
def test_tokens_bound_cerebras_headers_and_a_day_limit(tmp_path: Path, mock_server: Callable[..., MockProcess]) -> None:
    server = limited(mock_server, 200, rpd=50_000, ratelimit_headers="cerebras")  # 212 tokens a request: TPM binds
    found, _ = discover(tmp_path, server, 200)
    assert near(found["sustainable_tokens_per_min"], REFILL_TPS * 60, 0.10), found  # measured within 0.8%
    assert near(found["sustainable_rate_rps"], REFILL_TPS / (PROMPT + 200), 0.10)
    assert near(found["burst_tokens"], TPM, 0.15), found  # measured: exact
    assert near(found["from_429s"]["burst_tokens"], TPM, 0.15)  # measured within 3.8%
    assert found["binding"] == "tokens" and found["evidence"] == "both"
    assert near(found["from_headers"]["tokens"]["refill_per_s"], REFILL_TPS, 0.10)  # measured within 0.2%
    (day,) = found["per_day"]  # advertised, never drained: 50,000 requests at ~9 a second
    assert day["kind"] == "requests" and day["limit"] == 50_000 and day["remaining"] > 50_000 - 1_000
    assert day["verify_s"] > 3_000 and "not tested" in found["audit"]


@pytest.mark.timing
def test_no_rate_limit_headers(tmp_path: Path, mock_server: Callable[..., MockProcess]) -> None:
    """From 429s alone (they still carry retry-after, and a message naming the limit, as OpenAI's do)."""
    server = limited(mock_server, 16, ratelimit_headers="none")
    found, outcome = discover(tmp_path, server, 16)
    assert not any(r.ratelimit for r in read_records(outcome.run_dir / "requests.jsonl"))
    assert near(found["sustainable_rate_rps"], REFILL_RPS, 0.10), found  # measured within 2.3%
    assert near(found["burst_requests"], RPM, 0.15), found  # measured within 3%
    assert found["evidence"] == "429s" and found["binding"] == "requests" and found["from_headers"] == {}


@pytest.mark.timing
def test_short_bursts(tmp_path: Path, mock_server: Callable[..., MockProcess]) -> None:
    """A real-time minute and a bucket of half a second's allowance: 1,200 RPM is 20/s, 10 a burst."""
    server = mock_server(ttft_ms=1, itl_ms=0, output_tokens=16, rpm=1_200, tpm=120_000, burst_s=0.5)
    found, _ = discover(tmp_path, server, 16)
    assert near(found["sustainable_rpm"], 1_200, 0.10), found  # measured within 2.3%
    assert found["burst_requests"] == 10, found  # as the headers count it (measured: 10 every time)
    assert abs(found["from_429s"]["burst_requests"] - 10) <= 1.5, found  # to within a request; measured 9.5-10.3
    assert found["binding"] == "requests"


@pytest.mark.timing
def test_max_rate_below_the_limit_finds_none(tmp_path: Path, mock_server: Callable[..., MockProcess]) -> None:
    server = limited(mock_server, 16)
    found, outcome = discover(tmp_path, server, 16, max_rate=10)
    assert outcome.exit_code == 0 and mock_stats(server.base_url)["throttled"] == 0
    assert found["no_limit_found_up_to_rps"] == 10 and found["verdict"].startswith("no limit found up to 10 req/s")
    for key in ("sustainable_rate_rps", "sustainable_rpm", "sustainable_tokens_per_min", "burst_requests"):
        assert found[key] is None, key  # nothing sustainable: no bucket drained
    assert found["verified_s"] == 0 and found["observed_rpm"] <= 10 * 60 * 1.1  # what was sent; measured 600
    assert found["from_headers"]["requests"]["capacity"] == RPM  # the bucket, as advertised, never fell


def test_errors_before_any_429_are_bisected(tmp_path: Path) -> None:
    mock = {"ttft_ms": 1, "itl_ms": 0, "output_tokens": 4, "faults": {"http_500": 0.5}}
    sc = Scenario.model_validate(
        {
            "name": "errors",
            "target": {"base_url": "mock", "mock": mock},
            "workload": {"max_tokens": 4},
            "load": {"search": {"start_rate": 20, "step_duration_s": 0.5, "max_steps": 3}},
        }
    )
    found = execute(sc, "errors.yaml", tmp_path, on_step=lambda s: None, report=False).summary["search"]
    assert found["steps"] == 3 and found["binding"] == "errors" and found["evidence"] == "steps"
    assert found["sustainable_rpm"] is None and found["verdict"] == "no rate held, down to the lowest one tried"


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
    assert sc.target.mock.burst_s is None and sc.target.mock.ratelimit_minute_s == 60  # full-minute buckets
    for text, needle in (
        ("load: {rate: [2], search: {}}\n", "search chooses the rates itself"),
        ("load: {search: {}, workers: 2}\n", "search runs in one process"),
        ("load: {search: {factor: 1}}\n", "load.search.factor"),
        ("load: {search: {steady_s: 0}}\n", "load.search.steady_s"),
        ("target: {mock: {ratelimit_headers: anthropic}}\nload: {search: {}}\n", "target.mock.ratelimit_headers"),
    ):
        with pytest.raises(ScenarioError, match=needle):
            load_scenario(write(tmp_path / "x.yaml", text))
