from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from loadtest.config.scenario import Scenario
from loadtest.config.steps import StepPlan
from loadtest.output.progress import sweep_fraction
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
