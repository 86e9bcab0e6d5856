"""Rate-limit headers (both dialects), the mock's buckets, and the retry rule. Pure functions."""

from __future__ import annotations

import pytest

from loadtest.analysis.ratelimit import (
    format_duration,
    limit_named,
    parse_duration,
    parse_ratelimit,
    parse_ratelimit_windows,
    retry_after_s,
)
from loadtest.analysis.records import RequestRecord
from loadtest.config.scenario import RetryPolicy
from loadtest.engine.retry import retry_delay_s
from loadtest.mock.limits import RateLimiter


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.75", 0.75), ("7.66s", 7.66)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-3)


@pytest.mark.parametrize("bad", ["", "soon", "1x", "s", "-1", "1s2"])
def test_unreadable_durations(bad: str) -> None:
    assert parse_duration(bad) is None


def test_openai_and_cerebras_dialects_parse_to_one_shape() -> None:
    openai = parse_ratelimit(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "599",
            "x-ratelimit-reset-requests": "100ms",
            "x-ratelimit-limit-tokens": "60000",
            "x-ratelimit-remaining-tokens": "59700",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert openai == {
        "requests": {"limit": 600, "remaining": 599, "reset_s": 0.1, "window": "minute"},
        "tokens": {"limit": 60000, "remaining": 59700, "reset_s": 360.0, "window": "minute"},
    }
    cerebras = parse_ratelimit(
        {
            "x-ratelimit-limit-requests-day": "14400",
            "x-ratelimit-remaining-requests-day": "14399",
            "x-ratelimit-reset-requests-day": "33011.38",
            "x-ratelimit-limit-tokens-minute": "60000",
            "x-ratelimit-remaining-tokens-minute": "59000",
            "x-ratelimit-reset-tokens-minute": "11.38",
        }
    )
    assert cerebras["requests"] == {"limit": 14400, "remaining": 14399, "reset_s": 33011.38, "window": "day"}
    assert cerebras["tokens"] == {"limit": 60000, "remaining": 59000, "reset_s": 11.38, "window": "minute"}
    assert parse_ratelimit({}) == {} and parse_ratelimit(None) == {}


def test_retry_after_prefers_milliseconds() -> None:
    assert retry_after_s({"retry-after": "2", "retry-after-ms": "1234"}) == 1.234
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None


def test_buckets_refill_continuously_and_advertise() -> None:
    lim = RateLimiter({("requests", "minute"): 600, ("tokens", "minute"): 60_000}, burst_s=1.0)
    # capacity: 10 requests and 1,000 tokens (one second of each limit)
    admitted = [lim.admit(0.0, 30)[0] for _ in range(12)]
    assert admitted == [True] * 10 + [False] * 2
    ok, wait, headers = lim.admit(0.0, 30)
    assert not ok and wait == pytest.approx(0.1)  # one request refills in 0.1 s
    assert headers["x-ratelimit-limit-requests"] == "600" and headers["x-ratelimit-remaining-requests"] == "0"
    assert parse_duration(headers["x-ratelimit-reset-requests"]) == pytest.approx(1.0)
    assert lim.admit(0.1, 30)[0] and not lim.admit(0.1, 30)[0]
    big = RateLimiter({("tokens", "minute"): 60_000}, burst_s=0.1)  # capacity 100 tokens
    assert big.admit(0.0, 300)[0]  # a full bucket admits a request larger than itself, into debt...
    ok, wait, _ = big.admit(0.0, 300)
    assert not ok and wait == pytest.approx(0.3)  # ...which delays the next: 200 in debt + 100 to fill
    cerebras = RateLimiter({("requests", "day"): 14_400, ("tokens", "minute"): 60_000}, dialect="cerebras")
    h = cerebras.admit(5.0, 100)[2]
    assert h["x-ratelimit-limit-requests-day"] == "14400" and h["x-ratelimit-remaining-tokens-minute"] == "59900"
    assert float(h["x-ratelimit-reset-tokens-minute"]) == pytest.approx(0.1)


def test_buckets_hold_a_whole_period_by_default() -> None:
    """As OpenAI documents: a per-minute limit may be spent in one burst; a per-day one likewise."""
    lim = RateLimiter({("requests", "minute"): 600, ("requests", "day"): 14_400, ("tokens", "minute"): 60_000})
    assert [(b.capacity, b.rate) for b in lim.buckets] == [(600, 10), (14_400, 14_400 / 86_400), (60_000, 1_000)]
    assert sum(lim.admit(0.0, 10)[0] for _ in range(700)) == 600  # a minute's allowance at once, then 429s
    squeezed = RateLimiter({("requests", "minute"): 600}, minute_s=3)  # tests compress time...
    (b,) = squeezed.buckets
    assert (b.capacity, b.rate) == (600, 200)  # ...keeping the shape: a whole "minute" in the bucket
    ok, _, headers = squeezed.admit(0.0, 1)
    assert ok and parse_duration(headers["x-ratelimit-reset-requests"]) == pytest.approx(1 / 200, abs=1e-3)


def test_no_headers_dialect_and_429_messages_name_the_limit() -> None:
    lim = RateLimiter({("requests", "minute"): 600, ("tokens", "minute"): 60_000}, burst_s=0.1, dialect="none")
    assert lim.admit(0.0, 50) == (True, 0.0, {})  # 1 request and 100 tokens of capacity: no header, ever
    ok, wait, headers = lim.admit(0.0, 50)
    assert not ok and headers == {}
    message = lim.refusal("gpt-x", 50, wait)
    assert message.startswith("Rate limit reached for gpt-x in organization org-mock on requests per min (RPM)")
    assert limit_named(f"HTTP 429: {message}") == ("requests", "minute")
    openai = "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000"
    assert limit_named(openai) == ("tokens", "minute") and limit_named("Too many requests") is None


def test_every_advertised_window_is_kept() -> None:
    h = RateLimiter(
        {("requests", "minute"): 30, ("requests", "day"): 14_400, ("tokens", "minute"): 60_000}, dialect="cerebras"
    ).admit(0.0, 100)[2]
    windows = parse_ratelimit_windows(h)
    assert set(windows) == {("requests", "minute"), ("requests", "day"), ("tokens", "minute")}
    assert windows[("requests", "day")]["limit"] == 14_400 and windows[("requests", "day")]["remaining"] == 14_399
    assert parse_ratelimit(h)["requests"]["window"] == "minute"  # the one-window shape keeps the per-minute limit


def rec(
    status: str = "error", cls: str | None = "http_429", attempt: int = 1, after: float | None = 2.0
) -> RequestRecord:
    return RequestRecord(id=1, step=0, status=status, error_class=cls, attempt=attempt, retry_after_s=after)  # type: ignore[arg-type]


def test_retry_delay_rules() -> None:
    p = RetryPolicy(
        on=["429", "5xx", "timeout"], max_attempts=3, backoff="retry-after", base_s=0.5, max_s=10, jitter=0.2
    )
    assert retry_delay_s(p, rec(), 0.0) == 2.0  # exactly what the server asked
    assert retry_delay_s(p, rec(), 0.5) == pytest.approx(2.2)  # jitter only adds: never before retry-after
    assert retry_delay_s(p, rec(after=None), 0.0) == 0.5  # no header: exponential
    assert retry_delay_s(p, rec(cls="http_5xx", attempt=2, after=None), 0.0) == 1.0
    assert retry_delay_s(p, rec(attempt=3), 0.0) is None  # attempts used up
    assert retry_delay_s(p, rec(after=30.0), 0.0) is None  # asks for more than max_s: give up
    assert retry_delay_s(p, rec(cls="http_4xx"), 0.0) is None  # not in `on`
    assert retry_delay_s(p, rec(status="ok", cls=None), 0.0) is None
    assert retry_delay_s(None, rec(), 0.0) is None  # retries are off by default
    e = RetryPolicy(on=[429], backoff="exponential", base_s=1, max_s=3, jitter=0, max_attempts=9)  # type: ignore[list-item]
    assert [retry_delay_s(e, rec(attempt=a), 0.0) for a in (1, 2, 3, 4)] == [1, 2, 3, 3]
