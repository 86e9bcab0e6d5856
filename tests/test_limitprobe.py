"""Limit discovery at full size on a virtual clock: the real planner (StepPlanner) chooses every
step, and the mock's own token buckets (mock/limits.py RateLimiter) answer each request at the time
the driver's arrival process (arrival_offsets_ns) would send it. No sockets and no sleeping, so a
probe of minute-long buckets at 600 RPM / 60,000 TPM with default settings takes milliseconds and
is exact; tests/test_search.py runs the same probes against the mock server for real.

Every figure is checked against the limiter's configuration (a hand-computed value), never against
the planner's own arithmetic; the probe's length is the virtual time it would take.
"""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.analysis.events import RequestDone, StepFinished
from loadtest.analysis.limitsummary import search_result
from loadtest.analysis.live import LiveStep
from loadtest.analysis.records import RequestRecord
from loadtest.config.scenario import Scenario
from loadtest.engine.planner import StepPlanner
from loadtest.mock.limits import RateLimiter
from loadtest.workload.arrivals import arrival_offsets_ns

PROMPT = 12
RPM, TPM = 600, 60_000


def scenario(max_tokens: int, **search: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "virtual",
            "workload": {"max_tokens": max_tokens, "prompt": {"synthetic": {"input_tokens": PROMPT}}},
            "load": {"search": {"start_rate": 1, "max_rate": 40, **search}},
        }
    )


def record(rid: int, step: int, now: float, ok: bool, headers: dict[str, str], message: str, out: int) -> RequestRecord:
    sent, end = int(now * 1e9), int((now + 0.1) * 1e9)
    if not ok:
        return RequestRecord(
            id=rid, step=step, sent_ns=sent, end_ns=end, status="error", error_class="http_429", http_status=429,
            error=f"HTTP 429: {message}", retry_after_s=0.1, ratelimit=headers or None,
        )  # fmt: skip
    return RequestRecord(
        id=rid, step=step, sent_ns=sent, end_ns=end, first_token_ns=sent + 20_000_000, last_token_ns=end,
        chunk_times_ns=[sent + 20_000_000, end], input_tokens=PROMPT, output_tokens=out, tokens_source="usage",
        http_status=200, ratelimit=headers or None,
    )  # fmt: skip


def probe(sc: Scenario, limits: dict[tuple[str, str], float], **limiter: Any) -> tuple[dict[str, Any], float]:
    """(the summary's search, seconds the probe took): each step ends 0.1 s after its last send."""
    lim = RateLimiter(limits, **limiter)
    live = LiveStep()
    planner = StepPlanner(sc, live)
    charge, clock, rid, steps = PROMPT + sc.workload.max_tokens, 0.0, 0, []
    for step in planner.steps():
        clock += step.pause_s
        offsets = arrival_offsets_ns(step.value, step.arrival, duration_s=step.duration_s, seed=step.index) / 1e9
        for off in offsets:
            ok, wait, headers = lim.admit(clock + off, charge)
            message = "" if ok else lim.refusal("m", charge, wait)
            done = RequestDone(record(rid, step.index, clock + off, ok, headers, message, sc.workload.max_tokens))
            live(done)
            planner(done)
            rid += 1
        clock += step.duration_s + 0.1
        finished = StepFinished(step, int(clock * 1e9))
        live(finished)
        planner(finished)
        assert planner.last is not None
        steps.append(planner.last)
    found = search_result(steps, sc, planner.probe)
    assert found is not None
    return found, clock


def near(value: float | None, truth: float, within: float) -> bool:
    return value is not None and abs(value - truth) <= within * truth


@pytest.mark.parametrize("dialect", ["openai", "cerebras", "none"])
def test_full_minute_buckets_requests_bound(dialect: str) -> None:
    found, took = probe(scenario(16), {("requests", "minute"): RPM, ("tokens", "minute"): TPM}, dialect=dialect)
    assert took <= 180, took
    assert near(found["sustainable_rpm"], RPM, 0.10), found
    assert near(found["burst_requests"], RPM, 0.15), found  # a full minute's allowance
    assert near(found["from_429s"]["burst_requests"], RPM, 0.15)  # from 429s alone, headers or not
    assert near(found["burst_tokens"], RPM * (PROMPT + 16), 0.15)  # what that burst carried
    assert found["binding"] == "requests"  # no headers: from the 429 messages
    assert found["evidence"] == ("429s" if dialect == "none" else "both")
    assert found["verified_s"] >= 18  # steady_s 20 by default, between the first and last 429 of steps
    assert found["throttled_from_rpm"] == 40 * 60
    if dialect != "none":
        assert near(found["from_headers"]["requests"]["refill_per_min"], RPM, 0.05)
        assert near(found["from_headers"]["requests"]["capacity"], RPM, 0.01)
        assert f"advertised {RPM} requests per minute" in found["audit"]


@pytest.mark.parametrize("dialect", ["openai", "cerebras", "none"])
def test_full_minute_buckets_tokens_bound(dialect: str) -> None:
    found, took = probe(scenario(400), {("requests", "minute"): RPM, ("tokens", "minute"): TPM}, dialect=dialect)
    assert took <= 180, took
    assert near(found["sustainable_tokens_per_min"], TPM, 0.10), found
    assert near(found["sustainable_rpm"], TPM / (PROMPT + 400), 0.10)
    assert near(found["burst_tokens"], TPM, 0.15), found
    assert near(found["from_429s"]["burst_tokens"], TPM, 0.15)
    assert found["binding"] == "tokens"
    assert found["sustainable_rpm"] < RPM * 0.3  # the requests limit is nowhere near


def test_short_bursts() -> None:
    """A bucket of one second's allowance (10 requests): the burst is small and still measured, as
    the headers count it, and from 429s to within a request."""
    found, took = probe(scenario(16), {("requests", "minute"): RPM, ("tokens", "minute"): TPM}, burst_s=1.0)
    assert took <= 180
    assert near(found["sustainable_rpm"], RPM, 0.10), found
    assert found["burst_requests"] == 10 and abs(found["from_429s"]["burst_requests"] - 10) <= 1, found


def test_max_rate_below_the_limit_finds_no_limit() -> None:
    found, _ = probe(scenario(16, max_rate=8), {("requests", "minute"): RPM, ("tokens", "minute"): TPM})
    assert found["no_limit_found_up_to_rps"] == 8
    assert found["sustainable_rpm"] is None and found["sustainable_rate_rps"] is None
    assert found["burst_requests"] is None and found["verified_s"] == 0
    assert found["observed_rpm"] <= 8 * 60 * 1.1  # what was sent, not called sustainable
    assert found["verdict"].startswith("no limit found up to 8 req/s")
    assert found["from_headers"]["requests"]["refill_per_s"] is None  # the bucket never fell


def test_a_drain_longer_than_max_drain_s_is_projected_not_waited_for() -> None:
    """At 12 req/s a 600-request bucket refilling 10/s lasts 300 s: the probe stops at max_rate
    after one step and reports the refill the headers show, unverified, and the full drain time."""
    found, took = probe(scenario(16, max_rate=12), {("requests", "minute"): RPM, ("tokens", "minute"): TPM})
    assert found["no_limit_found_up_to_rps"] == 12 and found["sustainable_rpm"] is None
    assert found["evidence"] == "headers" and found["binding"] == "requests"
    h = found["from_headers"]["requests"]
    assert near(h["refill_per_min"], RPM, 0.10), h
    assert near(h["full_drain_s"], RPM / (12 - 10), 0.25), h  # 600 requests at 2/s net
    assert took < 80  # 4 steps of 10 s and one at max_rate, not the 300 s drain
    assert "not verified" in found["verdict"]


def test_per_day_limits_are_reported_not_hammered() -> None:
    """Cerebras advertises requests per day: 14,400 at the 600 RPM found would take 24 min to drain."""
    limits = {("requests", "minute"): RPM, ("requests", "day"): 14_400, ("tokens", "minute"): TPM}
    found, took = probe(scenario(16), limits, dialect="cerebras")
    assert took <= 180 and near(found["sustainable_rpm"], RPM, 0.10)
    (day,) = found["per_day"]
    assert day["kind"] == "requests" and day["limit"] == 14_400
    sent_ok = 14_400 - day["remaining"]
    assert 0 < sent_ok < 14_400 * 0.2  # the day bucket was spent only as the minute limit allowed
    drain = day["remaining"] / (RPM / 60 - 14_400 / 86_400)
    assert near(day["verify_s"], drain + 20, 0.12)  # + the steady window
    assert "advertised 14400 requests per day" in found["audit"] and "not tested" in found["audit"]
