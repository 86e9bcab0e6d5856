"""Rate limits as providers document them: continuously refilled token buckets for requests and
tokens, per minute and per day. The clock is passed in, so the arithmetic is testable exactly.

A request is charged 1 request and its estimated tokens (prompt + max_tokens) at admission; it
is admitted when every bucket holds its charge (a charge larger than a bucket's capacity needs a
full bucket), and the charge may leave a bucket in debt. A bucket holds ``burst_s`` seconds of
its rate (60 s by default: a per-minute limit can be spent in a burst, as with OpenAI; a smaller
value makes a mock that throttles sooner, so that short test steps see the limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..ratelimit import format_duration

__all__ = ["Bucket", "RateLimiter"]

_PERIOD = {"minute": 60.0, "day": 86400.0}


@dataclass
class Bucket:
    kind: str  # requests | tokens
    window: str  # minute | day
    limit: float
    burst_s: float
    level: float = math.nan
    updated: float = math.nan

    def __post_init__(self) -> None:
        self.rate = self.limit / _PERIOD[self.window]
        self.capacity = max(1.0, self.rate * min(self.burst_s, _PERIOD[self.window]))
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
    def __init__(self, limits: dict[tuple[str, str], float], *, burst_s: float = 60.0, dialect: str = "openai") -> None:
        self.buckets = [Bucket(kind, window, limit, burst_s) for (kind, window), limit in limits.items() if limit]
        self.dialect = dialect

    def admit(self, now: float, tokens: float) -> tuple[bool, float, dict[str, str]]:
        """(admitted, seconds to wait when not, rate-limit headers to send either way)."""
        for b in self.buckets:
            b.refill(now)
        charge = {"requests": 1.0, "tokens": tokens}
        wait = max((b.wait_s(charge[b.kind]) for b in self.buckets), default=0.0)
        if wait <= 0:
            for b in self.buckets:
                b.level -= charge[b.kind]
        return wait <= 0, wait, self.headers()

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
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
