from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import pytest
from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.text import Text

from loadtest.analysis.events import RequestDone, StepStarted
from loadtest.analysis.live import LiveStep
from loadtest.analysis.records import RequestRecord
from loadtest.config.scenario import Scenario
from loadtest.config.steps import StepPlan
from loadtest.output.progress import LiveProgress, sweep_fraction
from loadtest.runner import execute


def test_sweep_fraction() -> None:
    steps = [
        StepPlan(index=i, mode="concurrency", value=v, requests=90, duration_s=None, warmup=10)
        for i, v in enumerate((1, 2))
    ]
    assert sweep_fraction(steps, 0, 0, 0.0) == 0.0
    assert sweep_fraction(steps, 0, 50, 3.0) == pytest.approx(0.25)
    assert sweep_fraction(steps, 1, 100, 9.0) == pytest.approx(1.0)
    timed = [StepPlan(index=0, mode="rate", value=5.0, requests=None, duration_s=10.0, warmup=0)]
    assert sweep_fraction(timed, 0, 12, 4.0) == pytest.approx(0.4)


def test_live_progress_draws_on_a_terminal(tmp_path: Path) -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=220, color_system=None)
    sc = Scenario.model_validate(
        {
            "name": "p",
            "target": {"base_url": "mock", "mock": {"ttft_ms": 40, "itl_ms": 5, "output_tokens": 16}},
            "workload": {"max_tokens": 16},
            "load": {"concurrency": [2, 3], "requests": 12},
        }
    )
    outcome = execute(sc, "p.yaml", tmp_path, on_step=lambda s: None, live=console)
    assert outcome.exit_code == 0
    text = buf.getvalue()
    for needle in (
        "step 1/2: concurrency 2",
        "requests",
        "req/s",
        "tok/s",
        "TTFT p50",
        "in flight",
        "errors 0",
        "sweep ETA",
    ):
        assert needle in text, needle
    assert "step 2/2: concurrency 3" in text


@pytest.mark.timing
def test_a_redraw_costs_about_what_a_plain_line_and_bar_cost() -> None:
    """rich redraws the display 4 times a second in its own thread, holding the GIL from the event loop:
    a redraw must stay cheap. Against a plain line of the same text and the same bar, drawn in turn in the
    same process (medians of 9 batches): at most 3x (2.1x measured; the table it was cost ~10x, and added
    ~2 ms to the run's loop-lag p99 at concurrency 64)."""
    step = StepPlan(index=0, mode="concurrency", value=64, requests=100_000, duration_s=None, warmup=0)
    live = LiveStep()
    live(StepStarted(step, 0))
    for i in range(20_000):  # a full TTFT sample: its median is part of every redraw
        ttft_ns = 10**7 + (i * 7919) % (4 * 10**7)
        live(RequestDone(RequestRecord(id=i, step=0, sent_ns=i, first_token_ns=i + ttft_ns, end_ns=i + 10**8)))
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    progress = LiveProgress([step], console, lambda: 64, live)
    shown = Console(file=io.StringIO(), width=200, color_system=None)
    shown.print(progress)
    baseline = Group(Text(shown.file.getvalue().splitlines()[0]), ProgressBar(total=1.0, completed=0.2, width=60))  # type: ignore[attr-defined]

    def cpu(renderable: object) -> float:
        t = time.process_time()
        for _ in range(50):
            console.print(renderable)
        return time.process_time() - t

    ratios = [cpu(progress) / cpu(baseline) for _ in range(9)]
    assert statistics.median(ratios) <= 3.0, ratios
