"""The server's waiting-requests gauge, live, for the capacity search's over-saturation watch.

Sits between the metrics scraper (engine/servermetrics.py, a thread of its own) and its sink: every
scrape goes on to server_metrics.jsonl unchanged, and the waiting count of each (the known waiting
family of vLLM, SGLang, llama.cpp or TGI: analysis/promtext.py, summed over label sets) is kept with
its time on the run's timeline. Only those few lines are parsed, so the scraper thread holds the GIL
no longer than before. The driver reads the samples of the step it runs (``since``); a step start
drops older ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from loadtest.analysis.events import Event, StepStarted
from loadtest.analysis.promtext import ENGINES, parse_metrics

__all__ = ["WaitingTap", "waiting_count"]

WAITING = tuple(n for table in ENGINES.values() for n in table.get("waiting", ()))
_SGLANG = tuple("sglang_" + n.removeprefix("sglang:") for n in WAITING if n.startswith("sglang:"))


def waiting_count(text: str) -> float:
    """Requests waiting at the server in one scrape's kept text (NaN when it has no waiting gauge)."""
    lines = [ln for ln in text.splitlines() if ln.startswith(WAITING + _SGLANG) or ln.startswith("# TYPE")]
    keep = [ln for ln in lines if not ln.startswith("# TYPE") or ln.split()[2].startswith(WAITING + _SGLANG)]
    if not any(not ln.startswith("#") for ln in keep):
        return math.nan
    try:
        families = parse_metrics("\n".join(keep) + "\n")
    except ValueError:
        return math.nan
    values = [s[2] for f in families for s in f["samples"]]
    return float(sum(values)) if values else math.nan


class WaitingTap:
    """A scrape sink that passes every scrape on to ``sink`` and keeps (t_ns, waiting) of each."""

    def __init__(self, sink: Callable[[dict[str, Any]], None]) -> None:
        self.sink = sink
        self.samples: list[tuple[int, float]] = []  # appended by the scraper thread, read by the loop's

    def write(self, line: dict[str, Any]) -> None:
        self.sink(line)
        if isinstance(line.get("text"), str) and "t_ns" in line:
            self.samples.append((int(line["t_ns"]), waiting_count(line["text"])))

    def __call__(self, event: Event) -> None:
        """An observer of the run's events: a step's start drops the samples before it."""
        if isinstance(event, StepStarted):
            self.samples = [s for s in self.samples if s[0] >= event.t_ns]

    def since(self, t_ns: int) -> list[tuple[float, float]]:
        """(seconds after ``t_ns``, waiting) of the scrapes taken from ``t_ns`` on."""
        return [((t - t_ns) / 1e9, w) for t, w in list(self.samples) if t >= t_ns]
