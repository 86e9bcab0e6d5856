"""Rate limits end to end against the mock: 429 accounting, retries that honour retry-after."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

from loadtest.config.scenario import Scenario
from loadtest.output.rundir import read_records
from loadtest.runner import execute


def run(
    tmp_path: Path,
    mock: dict[str, Any],
    load: dict[str, Any],
    retry: dict[str, Any] | None = None,
    report: bool = False,
):
    sc = Scenario.model_validate(
        {
            "name": "rl",
            "target": {"base_url": "mock", "mock": {"ttft_ms": 1, "itl_ms": 0, "output_tokens": 8, **mock}},
            "workload": {"max_tokens": 8, "prompt": {"synthetic": {"input_tokens": 12}}},
            "load": load,
            "retry": retry,
        }
    )
    outcome = execute(sc, "rl.yaml", tmp_path, on_step=lambda s: None, report=report)
    return outcome.summary["steps"][0], list(read_records(outcome.run_dir / "requests.jsonl"))


def test_without_retries_every_429_is_a_record(tmp_path: Path) -> None:
    step, records = run(tmp_path, {"rpm": 600, "burst_s": 0.5}, {"concurrency": [8], "requests": 60})
    throttled = [r for r in records if r.error_class == "http_429"]
    assert throttled, "the burst should have been throttled"
    assert step["requests"]["ok"] + step["requests"]["failed"] == step["requests"]["sent"] == 60
    assert step["http_429"] == step["errors"]["http_429"] == len(throttled)
    assert step["rate_429"] == len(throttled) / 60 and step["first_429_s"] is not None
    for r in throttled:
        assert r.http_status == 429 and r.retry_after_s is not None and 0 < r.retry_after_s <= 0.2
        assert r.ratelimit is not None and r.ratelimit["x-ratelimit-limit-requests"] == "600"
    assert step["ratelimit"]["requests"]["limit"] == 600 and step["ratelimit"]["requests"]["window"] == "minute"
    assert all(r.final and r.attempt == 1 for r in records)  # retries are off by default


def test_retry_after_completes_every_request_and_never_retries_early(tmp_path: Path) -> None:
    retry = {"on": [429], "max_attempts": 50, "backoff": "retry-after", "jitter": 0.1}
    step, records = run(tmp_path, {"rpm": 600, "burst_s": 0.5}, {"concurrency": [20], "requests": 40}, retry)
    assert step["logical"]["requests"] == {"sent": 40, "ok": 40, "failed": 0}  # every logical request completed
    assert step["logical"]["retries"] > 0 and step["http_429"] == step["logical"]["retries"]
    assert step["requests"]["sent"] == len(records) == 40 + step["logical"]["retries"]  # each attempt a record
    by_id: dict[int, list] = defaultdict(list)
    for r in records:
        by_id[r.id].append(r)
    assert len(by_id) == 40
    for attempts in by_id.values():
        attempts.sort(key=lambda r: r.attempt)
        assert [r.attempt for r in attempts] == list(range(1, len(attempts) + 1))
        assert [r.final for r in attempts] == [False] * (len(attempts) - 1) + [True]
        assert attempts[-1].status == "ok"
        for prev, nxt in itertools.pairwise(attempts):
            assert prev.error_class == "http_429" and prev.retry_after_s is not None
            assert nxt.sent_ns - prev.end_ns >= prev.retry_after_s * 1e9  # not one retry before its retry-after
            assert nxt.first_sent_ns == attempts[0].sent_ns
    e2e = step["logical"]["e2e_ms"]
    assert e2e["max"] >= step["e2e_ms"]["max"]  # first send to final answer includes the waits


def test_cerebras_headers(tmp_path: Path) -> None:
    step, records = run(
        tmp_path, {"rpd": 14_400, "tpm": 60_000, "ratelimit_headers": "cerebras"}, {"concurrency": [2], "requests": 6}
    )
    assert step["requests"]["ok"] == 6
    assert step["ratelimit"]["requests"]["window"] == "day" and step["ratelimit"]["requests"]["limit"] == 14_400
    assert step["ratelimit"]["tokens"] == {
        "limit": 60_000,
        "remaining": step["ratelimit"]["tokens"]["remaining"],
        "reset_s": step["ratelimit"]["tokens"]["reset_s"],
        "window": "minute",
    }
    # The first admitted request leaves a full bucket less its own charge (12 prompt + 8 max_tokens); no
    # later one can see more, whatever order the responses end in.
    assert max(int(r.ratelimit["x-ratelimit-remaining-tokens-minute"]) for r in records if r.ratelimit) == 60_000 - 20
    assert 60_000 - 6 * 20 <= step["ratelimit"]["tokens"]["remaining"] < 60_000 - 20  # refilled continuously


def test_report_has_the_rate_limit_plot_when_limits_were_seen(tmp_path: Path) -> None:
    retry = {"on": [429], "max_attempts": 50}
    run(tmp_path / "a", {"rpm": 600, "burst_s": 0.5}, {"concurrency": [20], "requests": 30}, retry, report=True)
    run(tmp_path / "b", {}, {"concurrency": [2], "requests": 4}, report=True)
    (limited,) = list((tmp_path / "a").glob("*/*/plots"))
    (plain,) = list((tmp_path / "b").glob("*/*/plots"))
    assert (limited / "ratelimit.png").stat().st_size > 10_000
    assert not (plain / "ratelimit.png").exists()  # nothing to show without limits
    page = (limited.parent / "report.html").read_text()
    assert "Rate limits" in page and "429 answers over time" in page
