"""Live figures of the step under way, fed once per driver event: the progress display, the line printed
when a step ends and the sweep's stop rules (error ceiling, endpoint unreachable) all read one ``LiveStep``.

Bounded memory: counts, and a reservoir of TTFTs for an estimated median (the summary's percentiles,
computed from requests.jsonl afterwards, are exact).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from loadtest.analysis.checks import endpoint_unreachable
from loadtest.analysis.events import Event, RequestDone, StepFinished, StepStarted
from loadtest.analysis.metrics import per_s, ttft_ms
from loadtest.analysis.records import RequestRecord
from loadtest.config.steps import StepPlan

__all__ = ["LiveStats", "LiveStep"]


class LiveStats:
    """What a progress line needs while a step runs, in bounded memory: counts, token sums, the
    span of the step, and a fixed-size random sample of TTFTs for a live median (the summary's
    percentiles are exact; this one is an estimate). Deterministic for a seed."""

    RESERVOIR = 4096

    def __init__(self, seed: int = 0) -> None:
        self.sent = self.ok = self.output_tokens = 0
        self.errors: Counter[str] = Counter()
        self.first_sent_ns: int | None = None
        self.last_end_ns: int | None = None
        self._ttft = np.empty(self.RESERVOIR)  # the sample, in its first ``_kept`` places: its median is
        self._kept = self._seen = 0  # taken at every redraw of the live display, without a list's conversion
        self._rng = np.random.default_rng(seed)

    def add(self, r: RequestRecord) -> None:
        if r.warmup:
            return
        self.sent += 1
        self.first_sent_ns = r.sent_ns if self.first_sent_ns is None else min(self.first_sent_ns, r.sent_ns)
        self.last_end_ns = r.end_ns if self.last_end_ns is None else max(self.last_end_ns, r.end_ns)
        if r.status != "ok":
            self.errors[r.error_class or "unknown"] += 1
            return
        self.ok += 1
        self.output_tokens += r.output_tokens or 0
        if (v := ttft_ms(r)) is not None:
            self._seen += 1
            if self._kept < self.RESERVOIR:
                self._ttft[self._kept] = v
                self._kept += 1
            elif (j := int(self._rng.integers(0, self._seen))) < self.RESERVOIR:
                self._ttft[j] = v  # reservoir sampling: every TTFT so far equally likely to be kept

    @property
    def duration_s(self) -> float:
        if self.first_sent_ns is None or self.last_end_ns is None:
            return 0.0
        return (self.last_end_ns - self.first_sent_ns) / 1e9

    def line(self, *, index: int, mode: str, value: float) -> dict[str, Any]:
        """The fields of a step line (a subset of a step summary's keys, same meaning)."""
        d = self.duration_s
        return {
            "index": index,
            "mode": mode,
            "value": int(value) if mode == "concurrency" else value,
            "requests": {"sent": self.sent, "ok": self.ok, "failed": self.sent - self.ok},
            "errors": dict(self.errors),
            "request_throughput": per_s(self.ok, d),
            "output_token_throughput": per_s(self.output_tokens, d),
            "ttft_ms": {"p50": float(np.median(self._ttft[: self._kept])) if self._kept else None},
        }


class LiveStep:
    """The current step's ``LiveStats`` and counts; ``last`` is the line of the step that just finished,
    with its ``error_rate`` and whether it was ``unreachable`` (not one request connected)."""

    def __init__(self) -> None:
        self.current: StepPlan | None = None
        self.stats = LiveStats()
        self.done = 0  # records of the current step, warmup included (conversations: the ones ended)
        self.last: dict[str, Any] | None = None

    def __call__(self, event: Event) -> None:
        match event:
            case StepStarted(step=step):
                self.current = step
            case RequestDone(record=record):
                self.done += _counts_done(record)
                self.stats.add(record)
            case StepFinished(step=step):
                line = self.stats.line(index=step.index, mode=step.mode, value=step.value)
                sent = line["requests"]["sent"]
                line["error_rate"] = line["requests"]["failed"] / sent if sent else 0.0
                line["unreachable"] = endpoint_unreachable(line)
                self.last = line
                self.current, self.stats, self.done = None, LiveStats(), 0


def _counts_done(r: RequestRecord) -> int:
    """1 for a request; a conversation's turn counts when it ends the conversation (its last turn, or
    a failed one, or one after which the context would be too long): a step with ``workload.sessions``
    counts conversations."""
    if r.session is None:
        return 1
    return int(r.final and (r.status != "ok" or r.turn == r.session_turns or r.session_end is not None))
