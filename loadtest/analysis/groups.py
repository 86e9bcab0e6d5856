"""TTFT by shared-prefix group and by cache state (cold: the first request of its group, warm: the rest). Pure.

A group's first request is the earliest sent, across the whole run (every step, warmup included): it
finds nothing of its prefix in a server's cache, the later ones may. That is the client's view, by
order; the server's own is ``cached_share`` (sum of ``usage.prompt_tokens_details.cached_tokens`` over
sum of input tokens), where the server reports it. A request sent while its group's first is still in
prefill counts as warm here, yet misses on a real server: the two views then differ.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from typing import Any

import numpy as np

from loadtest.analysis.records import RequestRecord
from loadtest.analysis.stats import distribution

__all__ = ["GroupStats", "cached_share", "first_sends"]

_MS = 1e6


def cached_share(cached: np.ndarray, inputs: np.ndarray) -> float | None:
    """Sum of cached tokens / sum of input tokens, over requests that report both; None without any."""
    known = ~np.isnan(cached) & ~np.isnan(inputs)
    total = float(inputs[known].sum())
    return float(cached[known].sum()) / total if total > 0 else None


class GroupStats:
    """The grouped records of one step, a few numbers each (failed ones too: they were sent)."""

    def __init__(self) -> None:
        self.group, self.sent_ns, self.measured = array("q"), array("q"), array("b")
        self.ttft, self.cached, self.inputs = array("d"), array("d"), array("d")  # NaN: not known

    def add(self, r: RequestRecord) -> None:
        if r.group is None:
            return
        ok = r.status == "ok"
        self.group.append(r.group)
        self.sent_ns.append(r.sent_ns)
        self.measured.append(not r.warmup)
        ttft = (r.first_token_ns - r.sent_ns) / _MS if ok and r.first_token_ns is not None else math.nan
        self.ttft.append(ttft)
        self.cached.append(math.nan if r.cached_tokens is None or not ok else r.cached_tokens)
        self.inputs.append(math.nan if r.input_tokens is None or not ok else r.input_tokens)

    def first_sends(self) -> dict[int, int]:
        """Each group's earliest send in this step."""
        first: dict[int, int] = {}
        for g, t in zip(self.group, self.sent_ns, strict=True):
            if g not in first or t < first[g]:
                first[g] = t
        return first

    def summary(self, first: dict[int, int]) -> dict[str, Any] | None:
        """Per group and per cache state: requests, TTFT distribution, cached share. ``first``: each
        group's first send in the run (``first_sends``). None when no measured request had a group."""
        m = np.frombuffer(self.measured, dtype=np.int8).astype(bool) if len(self.measured) else np.zeros(0, bool)
        if not m.any():
            return None
        group = np.asarray(self.group, dtype=np.int64)[m]
        sent = np.asarray(self.sent_ns, dtype=np.int64)[m]
        ttft, cached, inputs = (np.asarray(a, dtype=float)[m] for a in (self.ttft, self.cached, self.inputs))
        cold = sent == np.array([first.get(int(g), -1) for g in group], dtype=np.int64)

        def part(sel: np.ndarray) -> dict[str, Any]:
            t = ttft[sel]
            return {
                "requests": int(sel.sum()),
                "ttft_ms": distribution(t[~np.isnan(t)]),
                "cached_share": cached_share(cached[sel], inputs[sel]),
            }

        by_group = [{"group": int(g), **part(group == g)} for g in np.unique(group)]
        return {"groups": len(by_group), "cold": part(cold), "warm": part(~cold), "by_group": by_group}


def first_sends(stats: Iterable[GroupStats]) -> dict[int, int]:
    """Each group's earliest send across steps (a run): the request that found its prefix cold."""
    first: dict[int, int] = {}
    for s in stats:
        for g, t in s.first_sends().items():
            if g not in first or t < first[g]:
                first[g] = t
    return first
