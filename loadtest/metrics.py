"""Metrics as pure functions: records in, numbers out. No I/O, no clocks, no globals.

Definitions follow DESIGN.md §3 (comparable with vLLM ``bench serve`` and NVIDIA AIPerf). Every
percentile is numpy's linear interpolation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .records import RequestRecord
from .scenario import PerRequestSLO

__all__ = [
    "PERCENTILES",
    "distribution",
    "e2e_ms",
    "error_counts",
    "goodput",
    "in_flight",
    "itl_gaps_ms",
    "meets_slo",
    "output_token_throughput",
    "request_throughput",
    "schedule_lag_ms",
    "step_duration_s",
    "summarize_step",
    "total_token_throughput",
    "tpot_ms",
    "ttft_ms",
]

PERCENTILES = (50, 90, 95, 99)
_MS = 1e6  # ns per ms


def distribution(values: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """mean, stddev (population), p50/p90/p95/p99 (linear interpolation) and max; None when empty."""
    a = np.asarray(values, dtype=float)
    keys = ["mean", "stddev", *(f"p{p}" for p in PERCENTILES), "max"]
    if a.size == 0:
        return dict.fromkeys(keys)
    pct = np.percentile(a, PERCENTILES)
    return {
        "mean": float(a.mean()),
        "stddev": float(a.std()),
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
        "max": float(a.max()),
    }


def ttft_ms(r: RequestRecord) -> float | None:
    """TTFT = first content chunk arrival - request sent (whole body for a non-streamed request)."""
    return None if r.first_token_ns is None else (r.first_token_ns - r.sent_ns) / _MS


def e2e_ms(r: RequestRecord) -> float:
    """E2E latency = last byte of the response - request sent."""
    return (r.end_ns - r.sent_ns) / _MS


def itl_gaps_ms(r: RequestRecord) -> np.ndarray:
    """ITL = gaps between consecutive content-chunk arrivals of one request (first token excluded)."""
    return np.diff(np.asarray(r.chunk_times_ns, dtype=np.int64)) / _MS


def tpot_ms(r: RequestRecord) -> float | None:
    """TPOT = (E2E - TTFT) / (output_tokens - 1), for streamed requests with more than one output token."""
    ttft = ttft_ms(r)
    if not r.stream or ttft is None or r.output_tokens is None or r.output_tokens <= 1:
        return None
    return (e2e_ms(r) - ttft) / (r.output_tokens - 1)


def schedule_lag_ms(r: RequestRecord) -> float | None:
    """Schedule lag = actual send - scheduled send (open-loop steps only)."""
    return None if r.scheduled_ns is None else (r.sent_ns - r.scheduled_ns) / _MS


def step_duration_s(records: Sequence[RequestRecord]) -> float:
    """From the first measured send to the last measured completion (warmup excluded by the caller)."""
    if not records:
        return 0.0
    return (max(r.end_ns for r in records) - min(r.sent_ns for r in records)) / 1e9


def _per_s(amount: float, duration_s: float) -> float:
    return amount / duration_s if duration_s > 0 else 0.0


def request_throughput(records: Sequence[RequestRecord], duration_s: float) -> float:
    """Successful requests / step duration."""
    return _per_s(sum(r.status == "ok" for r in records), duration_s)


def output_token_throughput(records: Sequence[RequestRecord], duration_s: float) -> float:
    """Sum of output tokens of successful requests / step duration."""
    return _per_s(sum(r.output_tokens or 0 for r in records if r.status == "ok"), duration_s)


def total_token_throughput(records: Sequence[RequestRecord], duration_s: float) -> float:
    """Sum of input + output tokens of successful requests / step duration."""
    return _per_s(sum((r.input_tokens or 0) + (r.output_tokens or 0) for r in records if r.status == "ok"), duration_s)


def meets_slo(r: RequestRecord, slo: PerRequestSLO) -> bool:
    """A successful request whose TTFT, TPOT and E2E are each within the per-request limit (if set)."""
    if r.status != "ok":
        return False
    checks = ((slo.ttft_ms, ttft_ms(r)), (slo.tpot_ms, tpot_ms(r)), (slo.e2e_ms, e2e_ms(r)))
    return all(bound is None or (value is not None and value <= bound) for bound, value in checks)


def goodput(records: Sequence[RequestRecord], slo: PerRequestSLO, duration_s: float) -> float:
    """Goodput = requests meeting every per-request SLO / step duration."""
    return _per_s(sum(meets_slo(r, slo) for r in records), duration_s)


def error_counts(records: Iterable[RequestRecord]) -> dict[str, int]:
    """Failed requests by error class."""
    return dict(Counter(r.error_class or "unknown" for r in records if r.status != "ok"))


def in_flight(records: Sequence[RequestRecord]) -> dict[str, float]:
    """Concurrency the server saw: max overlap of [sent, end) intervals, and mean = sum(E2E) / duration."""
    if not records:
        return {"max": 0, "mean": 0.0}
    events = sorted([(r.sent_ns, 1) for r in records] + [(r.end_ns, -1) for r in records], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    busy_ns = sum(r.end_ns - r.sent_ns for r in records)
    span = max(r.end_ns for r in records) - min(r.sent_ns for r in records)
    return {"max": peak, "mean": busy_ns / span if span > 0 else 0.0}


def summarize_step(
    records: Sequence[RequestRecord],
    *,
    index: int,
    mode: str,
    value: float,
    per_request_slo: PerRequestSLO | None = None,
) -> dict[str, Any]:
    """The summary of one step (DESIGN.md §5 keys) from all its records; warmup records are excluded."""
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.status == "ok"]
    duration = step_duration_s(measured)
    errors = error_counts(measured)
    slo = per_request_slo or PerRequestSLO()
    sent = len(measured)
    itl = np.concatenate([itl_gaps_ms(r) for r in ok]) if ok else np.empty(0)
    lags = [v for r in measured if (v := schedule_lag_ms(r)) is not None]
    good = sum(meets_slo(r, slo) for r in measured)
    sources = Counter(r.tokens_source for r in ok if r.tokens_source)
    return {
        "index": index,
        "mode": mode,
        "value": int(value) if mode == "concurrency" else value,
        "duration_s": duration,
        "requests": {"sent": sent, "ok": len(ok), "failed": sent - len(ok)},
        "warmup_requests": len(records) - sent,
        "errors": errors,
        "error_rate": (sent - len(ok)) / sent if sent else 0.0,
        "rate_429": errors.get("http_429", 0) / sent if sent else 0.0,
        "request_throughput": request_throughput(measured, duration),
        "output_token_throughput": output_token_throughput(measured, duration),
        "total_token_throughput": total_token_throughput(measured, duration),
        "goodput": _per_s(good, duration),
        "goodput_ratio": good / sent if sent else 0.0,
        "ttft_ms": distribution([v for r in ok if (v := ttft_ms(r)) is not None]),
        "itl_ms": distribution(itl),
        "tpot_ms": distribution([v for r in ok if (v := tpot_ms(r)) is not None]),
        "e2e_ms": distribution([e2e_ms(r) for r in ok]),
        "input_tokens": distribution([r.input_tokens for r in ok if r.input_tokens is not None]),
        "output_tokens": distribution([r.output_tokens for r in ok if r.output_tokens is not None]),
        "schedule_lag_ms": distribution(lags) if lags else None,
        "in_flight": in_flight(measured),
        "tokens_source": dict(sources),
    }
