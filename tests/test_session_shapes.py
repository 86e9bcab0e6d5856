"""Conversations under the real traffic shapes: their starts follow the step's arrival process (gamma
burstiness, ramps), a dataset's recorded answers as history, and a context limit that ends them.

Judged by the mock's request log (what reached the server), against values computed here by hand or
by the arrivals function single requests use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadtest.mock import MockProcess
from loadtest.workload.arrivals import arrival_offsets_ns
from tests.test_integration import run, scenario
from tests.test_mock import logged
from tests.test_sessions import by_conversation


def _first_turns_s(base_url: str) -> np.ndarray:
    """When each conversation's first turn reached the mock, seconds from the earliest one, in order."""
    firsts = np.sort([entries[0]["t"] for entries in by_conversation(logged(base_url)).values()])
    return firsts - firsts[0]


# How far a first turn may reach the mock from its due time, once the run's common offset is taken out:
# the client's wake-up and the mock's read on a loaded 2-core machine (seen: a few ms). The shapes told
# apart here differ by far more: gamma of shape 0.25 against shape 1 of the same seed moves arrivals by
# hundreds of ms, and the ramp's first gaps (200 ms) are eight times its final rate's (25 ms).
SLACK_MS = 20


@pytest.mark.timing
@pytest.mark.parametrize(
    ("load", "want"),
    [
        (
            {"rate": [20], "arrival": "gamma", "burstiness": 0.25, "requests": 12},
            lambda seed: arrival_offsets_ns(20, "gamma", count=12, seed=seed, burstiness=0.25),
        ),
        (
            {"ramp": {"from": 5, "to": 40, "over_s": 1}, "arrival": "constant", "requests": 15},
            lambda seed: arrival_offsets_ns(40, "constant", count=15, seed=seed, ramp=(5, 1)),
        ),
    ],
    ids=["gamma", "ramp"],
)
def test_open_loop_conversations_start_at_the_steps_arrival_times(
    mock_server: Callable[..., MockProcess], tmp_path: Path, load: dict[str, Any], want: Callable[[int], np.ndarray]
) -> None:
    """The first turns reach the mock at the offsets the arrivals function gives single requests of
    the same step and seed (gamma's burstiness, the ramp's line), each within the slack."""
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=2, request_log=100)
    sc = scenario(
        mock.base_url,
        workload={"prompt": {"synthetic": {"input_tokens": 8}}, "sessions": {"turns": 2}, "seed": 11},
        load=load,
    )
    summary, _ = run(sc, tmp_path)
    expected_s = want(11 + 0) / 1e9  # the step's seed: workload.seed + its index
    got_s = _first_turns_s(mock.base_url)
    assert len(got_s) == len(expected_s) and summary["steps"][0]["sessions"]["completed"] == len(expected_s)
    residual_ms = (got_s - expected_s) * 1e3
    residual_ms -= np.median(residual_ms)  # the run's common offset (the first turn's own lateness)
    assert np.abs(residual_ms).max() <= SLACK_MS, residual_ms.round(1)
