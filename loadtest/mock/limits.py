"""Rate limits as providers document them: continuously refilled token buckets for requests and
tokens, per minute and per day. The clock is passed in, so the arithmetic is testable exactly.

A request is charged 1 request and its estimated tokens (prompt + max_tokens) at admission; it
is admitted when every bucket holds its charge (a charge larger than a bucket's capacity needs a
full bucket), and the charge may leave a bucket in debt. A bucket holds its whole period's
allowance by default (a per-minute limit can be spent in one burst, as OpenAI documents; a
per-day one likewise); ``burst_s`` makes it hold only that many seconds of its rate (a shallow
bucket: throttling shows within a short step). ``minute_s`` compresses time for tests: a
"minute" lasts that many seconds (a day 1,440 of them) and the bucket keeps its shape (a whole
period's allowance), refilling faster. Headers: ``openai``, ``cerebras`` or ``none`` (a limiter
that advertises nothing; its 429s still carry retry-after and a message naming the limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loadtest.analysis.ratelimit import format_duration

__all__ = ["Bucket", "RateLimiter"]

_MINUTES = {"minute": 1.0, "day": 1440.0}
_SHORT = {
    ("requests", "minute"): "RPM",
    ("tokens", "minute"): "TPM",
    ("requests", "day"): "RPD",
    ("tokens", "day"): "TPD",
}


@dataclass
class Bucket:
    kind: str  # requests | tokens
    window: str  # minute | day
    limit: float
    burst_s: float | None = None  # seconds of the rate the bucket holds; None: the whole period
    minute_s: float = 60.0  # how long a minute lasts (tests compress time)
    level: float = math.nan
    updated: float = math.nan

    def __post_init__(self) -> None:
        period = self.minute_s * _MINUTES[self.window]
        self.rate = self.limit / period
        held = period if self.burst_s is None else min(self.burst_s, period)
        self.capacity = max(1.0, self.rate * held)
        self.level = self.capacity

    def refill(self, now: float) -> None:
        if not math.isnan(self.updated):
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` (at most a full bucket) is available."""
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)


class RateLimiter:
    def __init__(
        self,
        limits: dict[tuple[str, str], float],
        *,
        burst_s: float | None = None,
        dialect: str = "openai",
        minute_s: float = 60.0,
    ) -> None:
        self.buckets = [
            Bucket(kind, window, limit, burst_s, minute_s) for (kind, window), limit in limits.items() if limit
        ]
        self.dialect = dialect
        self.refused_by: Bucket | None = None  # the bucket that refused the last request refused

    def admit(self, now: float, tokens: float) -> tuple[bool, float, dict[str, str]]:
        """(admitted, seconds to wait when not, rate-limit headers to send either way)."""
        for b in self.buckets:
            b.refill(now)
        charge = {"requests": 1.0, "tokens": tokens}
        waits = [(b.wait_s(charge[b.kind]), i) for i, b in enumerate(self.buckets)]
        wait, worst = max(waits, default=(0.0, -1))
        if wait <= 0:
            for b in self.buckets:
                b.level -= charge[b.kind]
        else:
            self.refused_by = self.buckets[worst]
        return wait <= 0, wait, self.headers()

    def refusal(self, model: str, tokens: float, wait: float) -> str:
        """A 429's message in OpenAI's words, naming the limit that refused the request."""
        b = self.refused_by
        if b is None:
            return f"Rate limit reached: please try again in {format_duration(wait)}."
        per = "min" if b.window == "minute" else "day"
        used = max(0.0, b.capacity - b.level)
        asked = 1 if b.kind == "requests" else tokens
        return (
            f"Rate limit reached for {model} in organization org-mock on {b.kind} per {per} "
            f"({_SHORT[(b.kind, b.window)]}): Limit {b.limit:g}, Used {used:.0f}, Requested {asked:.0f}. "
            f"Please try again in {format_duration(wait)}."
        )

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.dialect == "none":
            return out
        for b in self.buckets:
            remaining = str(max(0, math.floor(b.level)))
            if self.dialect == "cerebras":
                suffix = f"{b.kind}-{b.window}"
                out[f"x-ratelimit-limit-{suffix}"] = f"{b.limit:g}"
                out[f"x-ratelimit-remaining-{suffix}"] = remaining
                out[f"x-ratelimit-reset-{suffix}"] = f"{b.reset_s():.3f}"
            elif b.window == "minute":  # OpenAI advertises its per-minute limits
                out[f"x-ratelimit-limit-{b.kind}"] = f"{b.limit:g}"
                out[f"x-ratelimit-remaining-{b.kind}"] = remaining
                out[f"x-ratelimit-reset-{b.kind}"] = format_duration(b.reset_s())
        return out
