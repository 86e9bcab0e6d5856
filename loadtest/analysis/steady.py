"""Each step seen over time: its steady window and its time slices (summary ``steady`` and ``windows``).

Pure: records in, numbers out. A step's *steady window* runs from when its requests in flight first
reach the target (closed loop: the concurrency; open loop: rate x median E2E, Little's law for a full
pipeline) to when its last measured request was sent: the ramp-up before and the drain after are cut
off. Never before the first measured send (warmup excluded); in flight counts warmup requests too,
since the server holds them. A step that never reaches its target starts its window when in flight
first reaches its peak.

Over a window, latencies (TTFT, TPOT, E2E) are of the measured requests *sent* in it; throughput counts
the successful requests *completed* in it, divided by its length; in flight is its time average.
``windows`` cuts a step, from its first measured send to its last completion, into slices of
``load.window_s`` (the last one may be shorter: ``complete: false``), so a server that drifts shows.
"""

from __future__ import annotations

import math
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from loadtest.analysis.metrics import tpot_ms, ttft_ms
from loadtest.analysis.records import RequestRecord
from loadtest.analysis.stats import distribution

__all__ = ["StepTimeline", "Timelines", "in_flight_mean", "steady_bounds", "steady_view", "time_windows"]


class StepTimeline:
    """A few numbers per request of one step (warmup included, flagged), in compact arrays."""

    def __init__(self) -> None:
        self.sent, self.end = array("q"), array("q")
        self.ok, self.warm = array("b"), array("b")
        self.ttft, self.tpot, self.out = array("d"), array("d"), array("d")

    def add(self, r: RequestRecord) -> None:
        self.sent.append(r.sent_ns)
        self.end.append(r.end_ns)
        self.warm.append(r.warmup)
        self.ok.append(r.status == "ok")
        good = r.status == "ok"
        self.ttft.append(v if good and (v := ttft_ms(r)) is not None else math.nan)
        self.tpot.append(v if good and (v := tpot_ms(r)) is not None else math.nan)
        self.out.append((r.output_tokens or 0) if good else 0)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(getattr(self, k)) for k in ("sent", "end", "ok", "warm", "ttft", "tpot", "out")}


class Timelines:
    """One timeline per step, filled while the records stream past (``tee``)."""

    def __init__(self) -> None:
        self.steps: dict[int, StepTimeline] = defaultdict(StepTimeline)

    def tee(self, records: Iterable[RequestRecord]) -> Iterator[RequestRecord]:
        for r in records:
            self.steps[r.step].add(r)
            yield r


def in_flight_mean(sent: np.ndarray, end: np.ndarray, a: int, b: int) -> float:
    """Time average over [a, b] of the requests in flight: their overlaps with it / its length."""
    if b <= a:
        return 0.0
    return float(np.clip(np.minimum(end, b) - np.maximum(sent, a), 0, None).sum()) / (b - a)


def _first_reaching(sent: np.ndarray, end: np.ndarray, target: float) -> int:
    """When the requests in flight first reach ``target``; when they first reach their peak if never."""
    times = np.concatenate((sent, end))
    deltas = np.concatenate((np.ones(len(sent), np.int64), -np.ones(len(end), np.int64)))
    order = np.lexsort((deltas, times))  # at equal times an end comes before a start
    level = np.cumsum(deltas[order])
    hit = np.nonzero(level >= target - 1e-9)[0]
    i = int(hit[0]) if len(hit) else int(np.argmax(level))
    return int(times[order][i])


def steady_bounds(a: dict[str, np.ndarray], mode: str, value: float) -> tuple[int, int, float] | None:
    """(start, end, target in flight) of the steady window, ns; None when it is empty."""
    measured = a["warm"] == 0
    if not measured.any():
        return None
    e2e = (a["end"] - a["sent"])[measured & (a["ok"] == 1)]
    if mode == "concurrency":
        target = float(value)
    else:
        target = max(1.0, value * float(np.median(e2e)) / 1e9) if len(e2e) else 1.0
    start = max(int(a["sent"][measured].min()), _first_reaching(a["sent"], a["end"], target))
    end = int(a["sent"][measured].max())
    return (start, end, target) if end > start else None


def _window_stats(a: dict[str, np.ndarray], lo: int, hi: int, full: bool) -> dict[str, Any]:
    """Latency of the measured requests sent in [lo, hi), throughput of those completed in it."""
    measured = a["warm"] == 0
    sent_in = measured & (a["sent"] >= lo) & (a["sent"] < hi)
    ok_sent = sent_in & (a["ok"] == 1)
    done = measured & (a["ok"] == 1) & (a["end"] >= lo) & (a["end"] < hi)
    failed = measured & (a["ok"] == 0) & (a["end"] >= lo) & (a["end"] < hi)
    span = (hi - lo) / 1e9
    ttft, tpot = a["ttft"][ok_sent], a["tpot"][ok_sent]
    e2e = (a["end"] - a["sent"])[ok_sent] / 1e6
    pick = (lambda x: distribution(x[~np.isnan(x)])) if full else (lambda x: _quick(x[~np.isnan(x)]))
    sent, ok = int(sent_in.sum()), int(ok_sent.sum())
    return {
        "requests": {"sent": sent, "ok": ok, "failed": sent - ok},
        "completions": int(done.sum()),
        "errors": int(failed.sum()),
        "request_throughput": float(done.sum()) / span if span > 0 else 0.0,
        "output_token_throughput": float(a["out"][done].sum()) / span if span > 0 else 0.0,
        "in_flight_mean": in_flight_mean(a["sent"], a["end"], lo, hi),
        "ttft_ms": pick(ttft),
        "tpot_ms": pick(tpot),
        "e2e_ms": pick(e2e),
    }


def _quick(x: np.ndarray) -> dict[str, float | None]:
    if not len(x):
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(x, (50, 95))
    return {"p50": float(p50), "p95": float(p95)}


def steady_view(a: dict[str, np.ndarray], mode: str, value: float) -> tuple[dict[str, Any] | None, int, int]:
    """The step's ``steady`` entry, and its bounds (ns; 0, 0 when there is none)."""
    bounds = steady_bounds(a, mode, value)
    if bounds is None:
        return None, 0, 0
    start, end, target = bounds
    origin = int(a["sent"][a["warm"] == 0].min())
    stats = _window_stats(a, start, end + 1, full=True)  # the last send is inside
    out = {
        "start_s": (start - origin) / 1e9,
        "end_s": (end - origin) / 1e9,
        "duration_s": (end - start) / 1e9,
        "target_in_flight": target,
        **stats,
    }
    out["error_rate"] = out["requests"]["failed"] / out["requests"]["sent"] if out["requests"]["sent"] else 0.0
    return out, start, end


def time_windows(a: dict[str, np.ndarray], width_s: float) -> list[tuple[int, int, dict[str, Any]]]:
    """(start, end, entry) of each slice of the step, from its first measured send to its last completion."""
    measured = a["warm"] == 0
    if not measured.any():
        return []
    origin, last = int(a["sent"][measured].min()), int(a["end"][measured].max())
    width = int(width_s * 1e9)
    out = []
    for lo in range(origin, last + 1, width):
        hi = min(lo + width, last + 1)
        entry = {"t_s": (lo - origin) / 1e9, "duration_s": (hi - lo) / 1e9, "complete": hi - lo == width}
        out.append((lo, hi, {**entry, **_window_stats(a, lo, hi, full=False)}))
    return out
