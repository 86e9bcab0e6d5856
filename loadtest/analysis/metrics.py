"""Metrics as pure functions: records in, numbers out. No I/O, no clocks, no globals.

Definitions follow docs/DESIGN.md §3 (comparable with vLLM ``bench serve`` and NVIDIA AIPerf). Every
percentile is numpy's linear interpolation.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from loadtest.analysis.apistats import ApiStats
from loadtest.analysis.connstats import ConnectionStats
from loadtest.analysis.groups import GroupStats
from loadtest.analysis.ratelimit import parse_ratelimit
from loadtest.analysis.records import RequestRecord
from loadtest.analysis.sessions import SessionStats
from loadtest.analysis.stats import PERCENTILES, distribution, weighted_percentile
from loadtest.config.scenario import PerRequestSLO

__all__ = [
    "PERCENTILES",
    "GapHistogram",
    "StepAccumulator",
    "distribution",
    "e2e_ms",
    "goodput",
    "in_flight",
    "itl_gaps_ms",
    "meets_slo",
    "output_token_throughput",
    "request_throughput",
    "schedule_lag_ms",
    "step_duration_s",
    "summarize_step",
    "tokens_per_chunk",
    "total_token_throughput",
    "tpot_ms",
    "ttfa_ms",
    "ttft_ms",
]

_MS = 1e6  # ns per ms


def ttft_ms(r: RequestRecord) -> float | None:
    """TTFT = first output chunk arrival (content, reasoning or tool-call arguments) - request sent
    (whole body for a non-streamed request)."""
    return None if r.first_token_ns is None else (r.first_token_ns - r.sent_ns) / _MS


def ttfa_ms(r: RequestRecord) -> float | None:
    """TTFA (time to first answer) = first answer chunk arrival (content or tool-call arguments, not
    reasoning) - request sent; = TTFT without reasoning (whole body for a non-streamed request)."""
    return None if r.first_answer_ns is None else (r.first_answer_ns - r.sent_ns) / _MS


def tokens_per_chunk(r: RequestRecord) -> float | None:
    """Output tokens / output chunks of a streamed request: how many tokens a chunk carries (ITL is per
    chunk, TPOT per token: mean ITL ~ TPOT x tokens per chunk)."""
    if not r.stream or not r.chunk_times_ns or not r.output_tokens:
        return None
    return r.output_tokens / len(r.chunk_times_ns)


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


def step_duration_s(sent_ns: Sequence[int], end_ns: Sequence[int]) -> float:
    """From the first measured send to the last measured completion (warmup excluded by the caller)."""
    if not len(sent_ns):
        return 0.0
    return (max(end_ns) - min(sent_ns)) / 1e9


def per_s(amount: float, duration_s: float) -> float:
    return amount / duration_s if duration_s > 0 else 0.0


def request_throughput(ok_requests: int, duration_s: float) -> float:
    """Successful requests / step duration."""
    return per_s(ok_requests, duration_s)


def output_token_throughput(output_tokens_ok: int, duration_s: float) -> float:
    """Sum of output tokens of successful requests / step duration."""
    return per_s(output_tokens_ok, duration_s)


def total_token_throughput(input_tokens_ok: int, output_tokens_ok: int, duration_s: float) -> float:
    """Sum of input + output tokens of successful requests / step duration."""
    return per_s(input_tokens_ok + output_tokens_ok, duration_s)


def meets_slo(r: RequestRecord, slo: PerRequestSLO) -> bool:
    """A successful request whose TTFT, TTFA, TPOT and E2E are each within the per-request limit (if set)."""
    if r.status != "ok":
        return False
    checks = (
        (slo.ttft_ms, ttft_ms(r)),
        (slo.ttfa_ms, ttfa_ms(r)),
        (slo.tpot_ms, tpot_ms(r)),
        (slo.e2e_ms, e2e_ms(r)),
    )
    return all(bound is None or (value is not None and value <= bound) for bound, value in checks)


def goodput(good_requests: int, duration_s: float) -> float:
    """Goodput = requests meeting every per-request SLO / step duration."""
    return per_s(good_requests, duration_s)


def in_flight(sent_ns: Sequence[int], end_ns: Sequence[int]) -> dict[str, float]:
    """Concurrency the server saw: max overlap of [sent, end) intervals, and mean = sum(E2E) / duration."""
    if not len(sent_ns):
        return {"max": 0, "mean": 0.0}
    sent, end = np.asarray(sent_ns, dtype=np.int64), np.asarray(end_ns, dtype=np.int64)
    times = np.concatenate((sent, end))
    deltas = np.concatenate((np.ones(len(sent), np.int64), -np.ones(len(end), np.int64)))
    order = np.lexsort((deltas, times))  # at equal times an end (-1) comes before a start (+1)
    peak = int(np.cumsum(deltas[order]).max())
    span = int(end.max() - sent.min())
    return {"max": peak, "mean": float((end - sent).sum()) / span if span > 0 else 0.0}


class GapHistogram:
    """The distribution of many durations (ITL gaps: ~60 a request) in bounded memory.

    Gaps are counted at 1 microsecond resolution: a dense array of counts for 0-262 ms (2 MB) and a
    counter for the rare longer ones. Percentiles are then exact order statistics of the gaps
    rounded to the microsecond, interpolated linearly like numpy's; mean and stddev come from exact
    integer sums. Memory does not grow with the number of gaps. Up to ``HOLD`` gaps (1 MB) are kept
    as they are and counted with a sort instead: the same values and counts, without the dense array
    (allocating, adding and scanning it cost ~7 ms a step, most of a sweep's ITL summary).
    """

    DENSE_US = 1 << 18
    HOLD = 1 << 17
    _FLUSH = 1 << 16

    def __init__(self) -> None:
        self.dense: np.ndarray | None = None  # allocated when more than HOLD gaps came
        self.sparse: Counter[int] = Counter()
        self._held: list[np.ndarray] = []  # gaps (us) not yet counted into dense and sparse
        self._held_n = 0
        self.n = self.sum_us = self.sumsq_us = 0
        self._buf = array("q")
        self._times, self._ends = array("q"), array("q")  # requests' chunk times, and where each one's end

    def add_times_ns(self, times_ns: Sequence[int]) -> None:
        """The gaps between one request's chunk arrivals (``itl_gaps_ms``), taken in bulk: the times are
        kept until a flush turns them all into gaps in one numpy pass (per request it cost ~25 us)."""
        if len(times_ns) > 1:
            self._times.extend(times_ns)
            self._ends.append(len(self._times))
            if len(self._times) >= self._FLUSH:
                self._flush()

    def _gaps_from_times(self) -> None:
        """The kept chunk times as gaps (us) in ``_buf``: differences within each request only."""
        if not self._times:
            return
        gaps = np.diff(np.frombuffer(self._times, dtype=np.int64))
        gaps = np.delete(gaps, np.frombuffer(self._ends, dtype=np.int64)[:-1] - 1)  # across two requests
        self._buf.frombytes(np.rint(gaps / _MS * 1e3).astype(np.int64).tobytes())  # itl_gaps_ms, in us
        self._times, self._ends = array("q"), array("q")

    def _flush(self) -> None:
        self._gaps_from_times()
        if not self._buf:
            return
        us = np.frombuffer(self._buf, dtype=np.int64).clip(min=0)
        self.n += int(us.size)
        self.sum_us += int(us.sum())
        self.sumsq_us += int(np.dot(us.astype(np.float64), us.astype(np.float64)).round())  # exact below 2**53
        self._buf = array("q")
        self._held.append(us)
        self._held_n += us.size
        if self._held_n > self.HOLD:
            self._count_held()

    def _count_held(self) -> None:
        """The held gaps into the dense counts (and sparse, past DENSE_US)."""
        if not self._held:
            return
        us = np.concatenate(self._held)
        self._held, self._held_n = [], 0
        if self.dense is None:
            self.dense = np.zeros(self.DENSE_US, dtype=np.int64)
        self.dense += np.bincount(us[us < self.DENSE_US], minlength=self.DENSE_US)
        self.sparse.update(us[us >= self.DENSE_US].tolist())

    def values_cum(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct gaps (microseconds, ascending) and the cumulative count up to each."""
        self._flush()
        if self.dense is None:  # HOLD gaps at most: counted by a sort
            values, counts = np.unique(np.concatenate(self._held or [np.empty(0, np.int64)]), return_counts=True)
            return values, np.cumsum(counts)
        self._count_held()
        idx = np.nonzero(self.dense)[0]
        big = sorted(self.sparse)
        values = np.concatenate((idx, np.asarray(big, dtype=np.int64)))
        cum = np.cumsum(np.concatenate((self.dense[idx], np.asarray([self.sparse[v] for v in big], dtype=np.int64))))
        return values, cum

    def quantiles_ms(self, levels: np.ndarray) -> np.ndarray:
        """The gap (ms) below which each fraction in ``levels`` of the gaps lie: a CDF to draw."""
        values, cum = self.values_cum()
        if not len(values):
            return np.empty(0)
        ranks = np.minimum((levels * self.n).astype(np.int64), self.n - 1)
        return values[np.searchsorted(cum, ranks, side="right")] / 1e3

    def distribution(self) -> dict[str, float | None]:
        """Same keys and definitions as ``distribution()`` (in milliseconds)."""
        if self.n == 0 and not self._buf and not self._times:
            return distribution([])
        values, cum = self.values_cum()
        counts = np.diff(cum, prepend=0)
        pct = {f"p{q}": weighted_percentile(values, counts, q) / 1e3 for q in PERCENTILES}
        mean = self.sum_us / self.n
        var = max(0.0, (self.n * self.sumsq_us - self.sum_us * self.sum_us) / (self.n * self.n))
        return {"mean": mean / 1e3, "stddev": math.sqrt(var) / 1e3, **pct, "max": float(values[-1]) / 1e3}


def _remaining(parsed: dict[str, dict[str, Any]], kind: str) -> float:
    value = (parsed.get(kind) or {}).get("remaining")
    return math.nan if value is None else float(value)


class StepAccumulator:
    """The records of one step reduced, one at a time, to the numbers its summary needs.

    Records stream through ``add`` (from the driver or from requests.jsonl) and are not kept:
    memory is a few numbers per request (compact arrays), not the records with their chunk times.
    """

    def __init__(self, per_request_slo: PerRequestSLO | None = None) -> None:
        self.slo = per_request_slo or PerRequestSLO()
        self.sent_ns, self.end_ns, self.failed_end_ns = array("q"), array("q"), array("q")
        self.ttft, self.tpot, self.e2e, self.lag = array("d"), array("d"), array("d"), array("d")
        # when each ttft/tpot/e2e value was measured (its record's end_ns): compare resamples by time
        self.ttft_at, self.tpot_at, self.e2e_at = array("q"), array("q"), array("q")
        self.itl = GapHistogram()  # ~60 gaps a request: counted, not kept
        self.input_tokens, self.output_tokens = array("d"), array("d")
        self.ok = self.good = self.warmup = self.tokens_in_ok = self.tokens_out_ok = 0
        self.errors: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()
        self.worker_sent: Counter[int] = Counter()  # each worker's share (--workers, Ray actors)
        self.worker_ok: Counter[int] = Counter()
        # rate limits: when 429s came, and what the server advertised (for the summary and plots)
        self.throttled_ns = array("q")
        self.limited_ns, self.remaining_requests, self.remaining_tokens = array("q"), array("d"), array("d")
        self._last_headers: tuple[int, dict[str, str]] | None = None
        # per logical request (attempts of one request share its id): sent = attempt-1 records,
        # outcome = the final attempt's, latency = first send to final answer
        self.logical_sent = self.logical_ok = self.retries = 0
        self.logical_e2e, self.attempts = array("d"), array("d")
        self.connections = ConnectionStats()
        self.ttfa, self.reasoning_tokens, self.tokens_per_chunk = array("d"), array("d"), array("d")
        self.groups = GroupStats()  # shared-prefix groups: summarized with the run's first sends (summary.py)
        self.sessions = SessionStats()  # conversations: per turn index and per conversation
        self.apis = ApiStats()  # embeddings inputs, images, tool calls

    def add(self, r: RequestRecord) -> None:
        self.groups.add(r)  # warmup too: a warmup request may be the one that warmed its group
        if r.warmup:
            self.warmup += 1
            return
        self.sent_ns.append(r.sent_ns)
        self.end_ns.append(r.end_ns)
        self.worker_sent[r.worker] += 1
        if (lag := schedule_lag_ms(r)) is not None:
            self.lag.append(lag)
        self._add_logical(r)
        self.connections.add(r)
        self.sessions.add(r)
        if r.ratelimit and (parsed := parse_ratelimit(r.ratelimit)):
            self.limited_ns.append(r.end_ns)
            self.remaining_requests.append(_remaining(parsed, "requests"))
            self.remaining_tokens.append(_remaining(parsed, "tokens"))
            if self._last_headers is None or r.end_ns >= self._last_headers[0]:
                self._last_headers = (r.end_ns, r.ratelimit)
        if r.error_class == "http_429":
            self.throttled_ns.append(r.end_ns)
        if r.status != "ok":
            self.errors[r.error_class or "unknown"] += 1
            self.failed_end_ns.append(r.end_ns)
            return
        self.ok += 1
        self.worker_ok[r.worker] += 1
        self.good += meets_slo(r, self.slo)
        if (v := ttft_ms(r)) is not None:
            self.ttft.append(v)
            self.ttft_at.append(r.end_ns)
        if (v := tpot_ms(r)) is not None:
            self.tpot.append(v)
            self.tpot_at.append(r.end_ns)
        self.e2e.append(e2e_ms(r))
        self.e2e_at.append(r.end_ns)
        self.itl.add_times_ns(r.chunk_times_ns)
        if r.input_tokens is not None:
            self.input_tokens.append(r.input_tokens)
            self.tokens_in_ok += r.input_tokens
        if r.output_tokens is not None:
            self.output_tokens.append(r.output_tokens)
            self.tokens_out_ok += r.output_tokens
        if r.tokens_source:
            self.sources[r.tokens_source] += 1
        self._add_answer(r)

    def _add_answer(self, r: RequestRecord) -> None:
        """TTFA, reasoning tokens and tokens per chunk of a successful request."""
        if (v := ttfa_ms(r)) is not None:
            self.ttfa.append(v)
        if r.reasoning_tokens is not None:
            self.reasoning_tokens.append(r.reasoning_tokens)
        if (v := tokens_per_chunk(r)) is not None:
            self.tokens_per_chunk.append(v)
        self.apis.add(r)

    def _add_logical(self, r: RequestRecord) -> None:
        self.logical_sent += r.attempt == 1
        self.retries += r.attempt > 1
        if r.final:
            self.attempts.append(r.attempt)
            if r.status == "ok":
                self.logical_ok += 1
                first = r.first_sent_ns if r.first_sent_ns is not None else r.sent_ns
                self.logical_e2e.append((r.end_ns - first) / _MS)

    def last_advertised(self) -> dict[str, dict[str, Any]] | None:
        """The limits the last response that carried rate-limit headers advertised."""
        return parse_ratelimit(self._last_headers[1]) if self._last_headers else None

    def summary(self, *, index: int, mode: str, value: float) -> dict[str, Any]:
        """The summary of the step (docs/DESIGN.md §5 keys and more)."""
        sent = len(self.sent_ns)
        failed = sent - self.ok
        duration = step_duration_s(self.sent_ns, self.end_ns)
        return {
            "index": index,
            "mode": mode,
            "value": int(value) if mode == "concurrency" else value,
            "duration_s": duration,
            "requests": {"sent": sent, "ok": self.ok, "failed": failed},
            "workers": [
                {"worker": w, "sent": n, "ok": self.worker_ok[w], "failed": n - self.worker_ok[w]}
                for w, n in sorted(self.worker_sent.items())
            ],
            "warmup_requests": self.warmup,
            "errors": dict(self.errors),
            "error_rate": failed / sent if sent else 0.0,
            "rate_429": self.errors.get("http_429", 0) / sent if sent else 0.0,
            "request_throughput": request_throughput(self.ok, duration),
            "output_token_throughput": output_token_throughput(self.tokens_out_ok, duration),
            "total_token_throughput": total_token_throughput(self.tokens_in_ok, self.tokens_out_ok, duration),
            "goodput": goodput(self.good, duration),
            "goodput_ratio": self.good / sent if sent else 0.0,
            "ttft_ms": distribution(self.ttft),
            "ttfa_ms": distribution(self.ttfa),
            "itl_ms": self.itl.distribution(),
            "tpot_ms": distribution(self.tpot),
            "e2e_ms": distribution(self.e2e),
            "input_tokens": distribution(self.input_tokens),
            "output_tokens": distribution(self.output_tokens),
            "reasoning_tokens": distribution(self.reasoning_tokens),
            "tokens_per_chunk": distribution(self.tokens_per_chunk),
            **self.apis.summary(duration, self.tokens_in_ok),
            "schedule_lag_ms": distribution(self.lag) if self.lag else None,
            "in_flight": in_flight(self.sent_ns, self.end_ns),
            **self.connections.summary(),
            "tokens_source": dict(self.sources),
            "http_429": len(self.throttled_ns),
            "first_429_s": (min(self.throttled_ns) - min(self.sent_ns)) / 1e9 if self.throttled_ns else None,
            "ratelimit": self.last_advertised(),
            "logical": {
                "requests": {
                    "sent": self.logical_sent,
                    "ok": self.logical_ok,
                    "failed": self.logical_sent - self.logical_ok,
                },
                "retries": self.retries,
                "attempts": distribution(self.attempts),
                "e2e_ms": distribution(self.logical_e2e),
            },
            **({"sessions": conv} if (conv := self.sessions.summary()) is not None else {}),
        }


def summarize_step(
    records: Iterable[RequestRecord],
    *,
    index: int,
    mode: str,
    value: float,
    per_request_slo: PerRequestSLO | None = None,
) -> dict[str, Any]:
    """The summary of one step from all its records; warmup records are excluded."""
    acc = StepAccumulator(per_request_slo)
    for r in records:
        acc.add(r)
    return acc.summary(index=index, mode=mode, value=value)
