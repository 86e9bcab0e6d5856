"""Conversations under the real traffic shapes: their starts follow the step's arrival process (gamma
burstiness, ramps), a dataset's recorded answers as history, and a context limit that ends them.

Judged by the mock's request log (what reached the server), against values computed here by hand or
by the arrivals function single requests use.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadtest.config.loading import load_scenario
from loadtest.config.mock import MockSettings
from loadtest.config.scenario import Scenario, ScenarioError
from loadtest.mock import MockProcess, start_mock
from loadtest.workload.arrivals import arrival_offsets_ns
from loadtest.workload.tokens import count_tokens
from tests.conftest import mock_stats
from tests.test_integration import run, scenario
from tests.test_mock import logged
from tests.test_sessions import by_conversation


@pytest.fixture(scope="module")
def shared_mock() -> Iterator[MockProcess]:
    """One mock for the tests below that read only their own part of its log (starting one takes ~2 s):
    1 ms to the first token, answers of exactly max_tokens words (it has 1000 to give)."""
    with start_mock(MockSettings(ttft_ms=1, itl_ms=0, output_tokens=1000, request_log=1000)) as mock:
        yield mock


def run_logged(mock: MockProcess, sc: Scenario, tmp_path: Path) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """Run ``sc``: its summary, its records, and what the mock logged of it (the entries it added)."""
    before = len(logged(mock.base_url))
    summary, records = run(sc, tmp_path)
    return summary, records, logged(mock.base_url)[before:]


def _first_turns_s(log: list[dict[str, Any]]) -> np.ndarray:
    """When each conversation's first turn reached the mock, seconds from the earliest one, in order."""
    firsts = np.sort([entries[0]["t"] for entries in by_conversation(log).values()])
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
    shared_mock: MockProcess, tmp_path: Path, load: dict[str, Any], want: Callable[[int], np.ndarray]
) -> None:
    """The first turns reach the mock at the offsets the arrivals function gives single requests of
    the same step and seed (gamma's burstiness, the ramp's line), each within the slack."""
    sc = scenario(
        shared_mock.base_url,
        workload={"prompt": {"synthetic": {"input_tokens": 8}}, "max_tokens": 2, "sessions": {"turns": 2}, "seed": 11},
        load=load,
    )
    summary, _, log = run_logged(shared_mock, sc, tmp_path)
    expected_s = want(11 + 0) / 1e9  # the step's seed: workload.seed + its index
    got_s = _first_turns_s(log)
    assert len(got_s) == len(expected_s) and summary["steps"][0]["sessions"]["completed"] == len(expected_s)
    residual_ms = (got_s - expected_s) * 1e3
    residual_ms -= np.median(residual_ms)  # the run's common offset (the first turn's own lateness)
    assert np.abs(residual_ms).max() <= SLACK_MS, residual_ms.round(1)


def _exchange(k: int, row: int) -> tuple[str, str]:
    """Row ``row``'s k-th exchange: a user message and a recorded answer the mock would never write."""
    user = f"question {k} of conversation {row}: please tell me about topic number {k}"
    return user, f"recorded answer {k} to conversation {row}, written by someone long ago"


def test_history_dataset_replays_the_recorded_answers(shared_mock: MockProcess, tmp_path: Path) -> None:
    """``history: dataset``: every later turn carries the answers the file recorded, not the mock's, and
    each turn's context is counted from those recorded messages."""
    rows = []
    for row in range(2):
        messages = []
        for k in range(3):
            user, answer = _exchange(k, row)
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        rows.append(json.dumps({"messages": messages}))
    (tmp_path / "chats.jsonl").write_text("\n".join(rows) + "\n")
    sc = scenario(
        shared_mock.base_url,
        workload={
            "prompt": {"dataset": {"path": str(tmp_path / "chats.jsonl"), "shuffle": False}},
            "sessions": {"history": "dataset"},
        },
        load={"concurrency": [2], "requests": 2},
    )
    summary, records, log = run_logged(shared_mock, sc, tmp_path)
    conversations = by_conversation(log)
    assert len(conversations) == 2
    for entries in conversations.values():
        assert len(entries) == 3
        row = int(re.search(r"conversation (\d+)", entries[0]["body"]["messages"][0]["content"]).group(1))  # type: ignore[union-attr]
        want: list[dict[str, str]] = []
        for k, entry in enumerate(entries):
            user, answer = _exchange(k, row)
            assert entry["body"]["messages"] == [*want, {"role": "user", "content": user}]
            assert entry["answer"] != answer  # the mock said something else, which the next turn does not carry
            want += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]

    def context(row: int, turn: int) -> int:  # the recorded messages before the turn, and its own
        texts = [t for k in range(turn - 1) for t in _exchange(k, row)] + [_exchange(turn - 1, row)[0]]
        return sum(count_tokens(t) for t in texts)

    assert sorted(r.context_tokens for r in records) == sorted(context(row, t) for row in (0, 1) for t in (1, 2, 3))
    assert summary["steps"][0]["sessions"]["completed"] == 2


def test_history_dataset_needs_a_dataset(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "target: {base_url: 'http://127.0.0.1:1/v1'}\n"
        "workload: {prompt: {synthetic: {input_tokens: 8}}, sessions: {turns: 2, history: dataset}}\n"
    )
    with pytest.raises(
        ScenarioError, match=r"s\.yaml: workload: .*sessions\.history: dataset .*workload\.prompt\.dataset"
    ):
        load_scenario(path)


def test_a_conversation_ends_where_its_next_prompt_would_exceed_max_context_tokens(
    shared_mock: MockProcess, tmp_path: Path
) -> None:
    """Messages of 10 tokens, answers of 5: turn t's prompt is 15 t - 5 tokens (10, 25, 40, 55, 70). With
    max_context_tokens 55 the mock sees 4 turns of each 5-turn conversation (55 is not over the limit),
    and the step counts them completed by context, not failed or cut."""
    sc = scenario(
        shared_mock.base_url,
        workload={
            "prompt": {"synthetic": {"input_tokens": 10}},
            "max_tokens": 5,
            "sessions": {"turns": 5, "max_context_tokens": 55},
        },
        load={"concurrency": [2], "requests": 3},
    )
    summary, records, log = run_logged(shared_mock, sc, tmp_path)
    conversations = by_conversation(log)
    assert len(conversations) == 3
    for entries in conversations.values():
        sizes = [sum(len(m["content"].split()) for m in e["body"]["messages"]) for e in entries]  # the mock's count
        assert sizes == [10, 25, 40, 55]
    assert sorted((r.turn, r.session_end) for r in records if r.session_end) == [(4, "context")] * 3
    s = summary["steps"][0]["sessions"]
    assert (s["started"], s["completed"], s["completed_by_context"], s["failed"], s["cut"]) == (3, 0, 3, 0, 0)
    assert s["turns_answered"]["max"] == 4 and s["duration_s"]["p50"] is not None


@pytest.mark.timing
def test_a_concurrency_ramp_adds_users_along_its_line(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    """From 1 user to 3 over 0.6 s (joins at 0.3 and 0.6 s): the first 0.2 s see one conversation at a
    time (each turn takes the mock 40 ms), later three run at once."""
    mock = mock_server(ttft_ms=40, itl_ms=0, output_tokens=2, request_log=200)
    sc = scenario(
        mock.base_url,
        workload={"prompt": {"synthetic": {"input_tokens": 8}}, "sessions": {"turns": 2}},
        load={"ramp": {"from": 1, "to": 3, "over_s": 0.6, "of": "concurrency"}, "duration_s": 1.0},
    )
    run(sc, tmp_path)
    log = sorted(logged(mock.base_url), key=lambda e: e["t"])
    t0 = log[0]["t"]
    early = [e for e in log if e["t"] - t0 < 0.25]
    assert len(early) >= 3  # one user's turns, each after the previous answer (40 ms)
    assert all(b["t"] - a["t"] >= 0.035 for a, b in itertools.pairwise(early)), [e["t"] - t0 for e in early]
    assert mock_stats(mock.base_url)["in_flight_max"] == 3  # all three users, once joined
