"""Rate limits end to end against the mock: 429 accounting, retries that honour retry-after.

Each test starts the mock itself (not ``base_url: mock``), so the mock's own counts (/mock/stats:
requests admitted, 429s sent, streams sent to the end) are the reference the run is checked against."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.analysis.records import RequestRecord
from loadtest.config.scenario import Scenario
from loadtest.mock import MockProcess
from loadtest.output.rundir import read_records
from loadtest.runner import execute
from tests.conftest import mock_stats

CHARGE = 12 + 8  # what the mock's limiter charges a request: 12 prompt tokens + max_tokens 8


def run(
    tmp_path: Path,
    start: Callable[..., MockProcess],
    mock: dict[str, Any],
    load: dict[str, Any],
    retry: dict[str, Any] | None = None,
    report: bool = False,
) -> tuple[dict[str, Any], list[RequestRecord], dict[str, Any]]:
    """(the step's summary, its records, the mock's own stats) of one run against a mock of its own."""
    server = start(ttft_ms=1, itl_ms=0, output_tokens=8, **mock)
    sc = Scenario.model_validate(
        {
            "name": "rl",
            "target": {"base_url": server.base_url},
            "workload": {"max_tokens": 8, "prompt": {"synthetic": {"input_tokens": 12}}},
            "load": load,
            "retry": retry,
        }
    )
    outcome = execute(sc, "rl.yaml", tmp_path, on_step=lambda s: None, report=report)
    records = list(read_records(outcome.run_dir / "requests.jsonl"))
    return outcome.summary["steps"][0], records, mock_stats(server.base_url)


def test_without_retries_every_429_is_a_record(tmp_path: Path, mock_server: Callable[..., MockProcess]) -> None:
    load = {"concurrency": [8], "requests": 60}
    step, records, stats = run(tmp_path, mock_server, {"rpm": 600, "burst_s": 0.5}, load)
    throttled = [r for r in records if r.error_class == "http_429"]
    ok = [r for r in records if r.status == "ok"]
    assert stats["throttled"] > 0, "the burst should have been throttled"
    # what the server admitted and refused, one record each: ok for every admitted one, 429 for the rest
    assert len(records) == 60 and stats["requests"] + stats["throttled"] == 60
    assert len(ok) == stats["requests"] and len(throttled) == stats["throttled"] and len(ok) + len(throttled) == 60
    assert stats["stream_tokens"] == 8 * len(ok)
    assert step["requests"] == {"sent": 60, "ok": stats["requests"], "failed": stats["throttled"]}
    assert step["http_429"] == step["errors"]["http_429"] == stats["throttled"]
    assert step["rate_429"] == stats["throttled"] / 60 and step["first_429_s"] is not None
    for r in throttled:
        assert r.http_status == 429 and r.retry_after_s is not None and 0 < r.retry_after_s <= 0.2
        assert r.ratelimit is not None and r.ratelimit["x-ratelimit-limit-requests"] == "600"
    assert step["ratelimit"]["requests"]["limit"] == 600 and step["ratelimit"]["requests"]["window"] == "minute"
    assert all(r.final and r.attempt == 1 for r in records)  # retries are off by default


def test_retry_after_completes_every_request_and_never_retries_early(
    tmp_path: Path, mock_server: Callable[..., MockProcess]
) -> None:
    retry = {"on": [429], "max_attempts": 50, "backoff": "retry-after", "jitter": 0.1}
    step, records, stats = run(
        tmp_path, mock_server, {"rpm": 600, "burst_s": 0.5}, {"concurrency": [20], "requests": 40}, retry
    )
    # the server admitted each of the 40 requests once and refused the rest: every refusal was retried
    assert stats["requests"] == 40 and stats["throttled"] > 0 and stats["stream_tokens"] == 40 * 8
    assert len(records) == 40 + stats["throttled"]  # each attempt a record
    assert sum(r.error_class == "http_429" for r in records) == stats["throttled"]
    assert step["logical"]["requests"] == {"sent": 40, "ok": 40, "failed": 0}  # every logical request completed
    assert step["logical"]["retries"] == step["http_429"] == stats["throttled"]
    assert step["requests"] == {"sent": len(records), "ok": 40, "failed": stats["throttled"]}
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


def test_cerebras_headers(tmp_path: Path, mock_server: Callable[..., MockProcess]) -> None:
    """What the limiter must advertise, from its configuration: a day bucket of 14,400 requests refilling
    1 every 6 s and a minute bucket of 60,000 tokens refilling 1,000 a second, each request charged 1
    request and 20 tokens at admission, the headers showing the buckets just after that charge."""
    mock = {"rpd": 14_400, "tpm": 60_000, "ratelimit_headers": "cerebras"}
    step, records, stats = run(tmp_path, mock_server, mock, {"concurrency": [2], "requests": 6})
    assert stats["requests"] == 6 and stats["throttled"] == 0 and step["requests"]["ok"] == 6
    heads = [r.ratelimit for r in records]
    assert all(h is not None for h in heads)
    assert {(h["x-ratelimit-limit-requests-day"], h["x-ratelimit-limit-tokens-minute"]) for h in heads} == {
        ("14400", "60000")
    }
    # The k-th admission leaves 14,400 - k requests: the day bucket refills less than one in the run's first 6 s.
    heads.sort(key=lambda h: -int(h["x-ratelimit-remaining-requests-day"]))
    assert [int(h["x-ratelimit-remaining-requests-day"]) for h in heads] == [14_400 - k for k in range(1, 7)]
    for k, h in enumerate(heads, 1):
        tokens = int(h["x-ratelimit-remaining-tokens-minute"])
        # k charges of 20 tokens, less what refilled meanwhile (the bucket never holds more than 60,000)
        assert 60_000 - k * CHARGE <= tokens <= 60_000 - CHARGE, (k, tokens)
        # reset: the seconds until the bucket is full again, at its refill rate, from the level shown
        assert abs(float(h["x-ratelimit-reset-tokens-minute"]) - (60_000 - tokens) / 1_000) <= 0.0015, h
        day_reset = float(h["x-ratelimit-reset-requests-day"])
        assert k * 6 - 5 <= day_reset <= k * 6, (k, day_reset)  # 6 s a request, less the refill since the start
    # the summary shows the last response's headers: the same arithmetic holds for them
    limits = step["ratelimit"]
    assert limits["requests"]["window"] == "day" and limits["requests"]["limit"] == 14_400
    assert 14_400 - 6 <= limits["requests"]["remaining"] <= 14_400 - 1
    assert limits["tokens"]["limit"] == 60_000 and limits["tokens"]["window"] == "minute"
    assert 60_000 - 6 * CHARGE <= limits["tokens"]["remaining"] <= 60_000 - CHARGE
    assert abs(limits["tokens"]["reset_s"] - (60_000 - limits["tokens"]["remaining"]) / 1_000) <= 0.0015
    last = max(records, key=lambda r: r.end_ns).ratelimit
    assert last is not None and limits["tokens"]["remaining"] == int(last["x-ratelimit-remaining-tokens-minute"])


def test_report_has_the_rate_limit_plot_when_limits_were_seen(
    tmp_path: Path, mock_server: Callable[..., MockProcess]
) -> None:
    retry = {"on": [429], "max_attempts": 50}
    load = {"concurrency": [20], "requests": 30}
    run(tmp_path / "a", mock_server, {"rpm": 600, "burst_s": 0.5}, load, retry, report=True)
    run(tmp_path / "b", mock_server, {}, {"concurrency": [2], "requests": 4}, report=True)
    (limited,) = list((tmp_path / "a").glob("*/*/plots"))
    (plain,) = list((tmp_path / "b").glob("*/*/plots"))
    assert (limited / "ratelimit.png").stat().st_size > 10_000
    assert not (plain / "ratelimit.png").exists()  # nothing to show without limits
    page = (limited.parent / "report.html").read_text()
    assert "Rate limits" in page and "429 answers over time" in page
