"""Live progress on a terminal (rich): the current step, its figures so far, and the sweep's ETA.

An event observer: the driver never formats output. Each event costs a few counter updates; the
display is redrawn by rich at 4 Hz from that state, in rich's own thread: a redraw holds the GIL from
the event loop, so it is one styled line and a bar (0.5 ms a redraw), not a table (3.2 ms; README
"How the request path was chosen"). Off a terminal nothing is drawn (CI logs get the one line per
step that the runner prints anyway).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

from loadtest.analysis.events import Event, StepStarted
from loadtest.analysis.live import LiveStep
from loadtest.config.steps import StepPlan

__all__ = ["LiveProgress", "sweep_fraction"]


def _step_fraction(step: StepPlan, done: int, elapsed_s: float) -> float:
    if step.duration_s is not None:
        return min(1.0, elapsed_s / step.duration_s)
    total = step.warmup + (step.requests or 0)
    return min(1.0, done / total) if total else 1.0


def sweep_fraction(steps: list[StepPlan], current: int, done: int, elapsed_s: float) -> float:
    """How much of the sweep is done: finished steps, plus the part of the current one.
    Steps weigh by their expected length (requests, or seconds times a nominal rate)."""
    weights = [s.warmup + s.requests if s.requests is not None else (s.duration_s or 0) for s in steps]
    total = sum(weights) or 1.0
    finished = sum(weights[:current])
    return (finished + weights[current] * _step_fraction(steps[current], done, elapsed_s)) / total


class LiveProgress:
    def __init__(
        self,
        steps: list[StepPlan],
        console: Console,
        in_flight: Callable[[], int],
        live: LiveStep,
        unit: str = "requests",  # what a step's count counts: conversations with workload.sessions
    ) -> None:
        self.steps, self.console, self.in_flight, self.unit = steps, console, in_flight, unit
        self.live_step = live  # fed before this display: the step under way and its figures
        self.started = self.step_started = time.monotonic()
        self.live = Live(self, console=console, refresh_per_second=4, transient=True)

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            self.step_started = time.monotonic()

    def __rich__(self) -> RenderableType:
        step, done = self.live_step.current, self.live_step.done
        if step is None:
            return Text("between steps...", style="dim")
        now = time.monotonic()
        in_step = now - self.step_started
        known = step.index < len(self.steps)  # limit discovery chooses its steps as it goes
        frac = sweep_fraction(self.steps, step.index, done, in_step) if known else 0.0
        elapsed = now - self.started
        eta = elapsed * (1 - frac) / frac if frac > 0.01 else None
        line = self.live_step.stats.line(index=step.index, mode=step.mode, value=step.value)
        unit = {"concurrency": "concurrency", "trace": "trace speedup"}.get(step.mode, "req/s")
        if step.duration_s is not None:
            progress = f"{max(0.0, step.duration_s - in_step):.0f} s left"
        elif step.requests is None:  # a whole trace
            progress = f"{done} requests"
        else:
            progress = f"{done}/{step.warmup + step.requests} {self.unit}"
        p50 = line["ttft_ms"]["p50"]
        failed = line["requests"]["failed"]
        head = f"step {step.index + 1}{f'/{len(self.steps)}' if known else ''}: {unit} {step.value:g}"
        rest = [
            progress,
            f"{line['request_throughput']:.1f} req/s",
            f"{line['output_token_throughput']:,.0f} tok/s",
            f"TTFT p50 {'-' if p50 is None else f'{p50:.1f}'} ms",
            f"in flight {self.in_flight()}",
        ]
        row = Text.assemble(
            (head, "bold"),
            "  " + "  ".join(rest) + "  ",
            (f"errors {failed}", "red" if failed else ""),
            f"  sweep ETA {'-' if eta is None else f'{eta:.0f} s'}",
        )
        return Group(row, ProgressBar(total=1.0, completed=frac, width=60))
