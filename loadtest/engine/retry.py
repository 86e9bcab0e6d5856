"""The retry policy: whether a failed attempt is retried, and after how long. Pure.

``backoff: retry-after`` waits what the server asked for (``retry-after-ms`` / ``retry-after``),
never less: jitter only adds to it. Without the header it falls back to exponential. A server
asking for more than ``max_s`` ends the request instead (a client would give up, not hang).
``backoff: exponential`` waits ``base_s * 2**(attempt - 1)``, at most ``max_s``, plus jitter.
"""

from __future__ import annotations

from loadtest.analysis.records import RequestRecord
from loadtest.config.scenario import RetryPolicy

__all__ = ["retry_delay_s"]


def _matches(policy: RetryPolicy, error_class: str | None) -> bool:
    names = {"http_429": "429", "http_5xx": "5xx", "http_4xx": "4xx"}
    return error_class is not None and names.get(error_class, error_class) in policy.on


def retry_delay_s(policy: RetryPolicy | None, rec: RequestRecord, u: float) -> float | None:
    """Seconds to wait before the next attempt of ``rec``'s request, or None when it is final.
    ``u`` is a uniform random number in [0, 1) for the jitter (the caller's seeded generator)."""
    if policy is None or rec.status == "ok" or rec.attempt >= policy.max_attempts:
        return None
    if not _matches(policy, rec.error_class):
        return None
    exponential = min(policy.max_s, policy.base_s * 2 ** (rec.attempt - 1))
    if policy.backoff == "retry-after" and rec.retry_after_s is not None:
        if rec.retry_after_s > policy.max_s:
            return None
        return rec.retry_after_s * (1 + policy.jitter * u)
    return exponential * (1 + policy.jitter * u)
