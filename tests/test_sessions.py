"""Conversations (``workload.sessions``) against the mock, judged by what the mock's request log saw.

The mock logs every request it received (its body and headers, when it had arrived whole) and the
answer it sent; these tests read that log, not the client's records, to check the history, the
session header, think times and how conversations start and end.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.analysis.events import RequestDone, StepStarted
from loadtest.analysis.live import LiveStep
from loadtest.analysis.records import RequestRecord
from loadtest.config.scenario import Load
from loadtest.config.steps import step_plan
from loadtest.mock import MockProcess
from loadtest.workload.tokens import count_tokens
from tests.conftest import mock_stats
from tests.test_integration import run, scenario
from tests.test_mock import CHAT, logged

INPUTS = [12, 5, 7, 3, 9]  # each turn's new user message, tokens
ANSWERS = [4, 6, 2, 5, 3]  # each turn's max_tokens: the mock answers exactly that many (it has 1000 to give)


def by_conversation(log: list[dict[str, Any]], header: str = "x-session-id") -> dict[str, list[dict[str, Any]]]:
    """The mock's log split by the session header's value, each conversation in arrival order."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in sorted(log, key=lambda e: e["t"]):
        out[entry["headers"][header]].append(entry)
    return dict(out)


@pytest.fixture
def busy_neighbour() -> Iterator[None]:
    """A process spinning on a core beside the test (timing must hold on a loaded machine)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def test_the_mock_logs_the_answer_it_sent(mock_server: Callable[..., MockProcess]) -> None:
    """The log's ``answer`` is the text a plain HTTP client received, streamed or whole (the other tests trust it)."""
    mock = mock_server(ttft_ms=0, itl_ms=0, output_tokens=7, request_log=4)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    got = []
    for stream in (False, True):
        body = json.dumps({**CHAT, "max_tokens": 5, "stream": stream}).encode()
        req = urllib.request.Request(mock.base_url + "/chat/completions", data=body)
        with direct.open(req, timeout=10) as resp:
            raw = resp.read().decode()
        if stream:
            chunks = [json.loads(x[6:]) for x in raw.split("\n") if x.startswith("data: {")]
            got.append("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]))
        else:
            got.append(json.loads(raw)["choices"][0]["message"]["content"])
    assert [e["answer"] for e in logged(mock.base_url)] == got and len(got[0].split()) == 5


def test_five_turn_conversations_carry_every_earlier_turn_and_grow_by_the_configured_lengths(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=1000, request_log=100)
    sc = scenario(
        mock.base_url,
        workload={
            "prompt": {"synthetic": {"input_tokens": 50}},
            "system_prompt": "be brief",
            "sessions": {"turns": 5, "input_tokens": INPUTS, "max_tokens": ANSWERS},
        },
        load={"concurrency": [2], "requests": 3},
    )
    summary, records = run(sc, tmp_path)
    conversations = by_conversation(logged(mock.base_url))
    assert len(conversations) == 3  # one header value per conversation, three conversations
    system = {"role": "system", "content": "be brief"}  # 2 tokens, 2 words
    for entries in conversations.values():
        assert len(entries) == 5
        history: list[dict[str, Any]] = [system]
        for k, entry in enumerate(entries):
            messages = entry["body"]["messages"]
            # every earlier turn, in order: the user's messages and the answers the mock sent
            assert messages[:-1] == history
            user = messages[-1]
            assert user["role"] == "user" and count_tokens(user["content"]) == len(user["content"].split()) == INPUTS[k]
            assert len(entry["answer"].split()) == ANSWERS[k] and entry["body"]["max_tokens"] == ANSWERS[k]
            words = sum(len(m["content"].split()) for m in messages)  # the mock counts prompt words
            assert words == 2 + sum(INPUTS[: k + 1]) + sum(ANSWERS[:k])
            history += [user, {"role": "assistant", "content": entry["answer"]}]
    # the records say which conversation and turn, and the context: what the server counted (usage)
    expected = [2 + sum(INPUTS[:t]) + sum(ANSWERS[: t - 1]) for t in range(1, 6)]
    assert sorted((r.session, r.turn) for r in records) == [(s, t) for s in range(3) for t in range(1, 6)]
    assert all(r.context_tokens == r.input_tokens == expected[r.turn - 1] for r in records)
    (step,) = summary["steps"]
    sessions = step["sessions"]
    assert (sessions["started"], sessions["completed"], sessions["failed"], sessions["cut"]) == (3, 3, 0, 0)
    assert [t["turn"] for t in sessions["by_turn"]] == [1, 2, 3, 4, 5]
    assert [(t["requests"], t["ok"]) for t in sessions["by_turn"]] == [(3, 3)] * 5
    assert [t["context_tokens"]["p50"] for t in sessions["by_turn"]] == expected
    assert all(t["ttft_ms"]["p50"] >= 1 for t in sessions["by_turn"])  # the mock's TTFT, per turn
    assert step["requests"] == {"sent": 15, "ok": 15, "failed": 0} and mock_stats(mock.base_url)["requests"] == 15
    assert mock_stats(mock.base_url)["in_flight_max"] == 2  # two users


def test_session_headers_reach_the_mock_one_value_per_conversation(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    mock = mock_server(ttft_ms=0, itl_ms=0, output_tokens=2, request_log=100)
    sc = scenario(
        mock.base_url,
        workload={
            "prompt": {"synthetic": {"input_tokens": 8}},
            "sessions": {"turns": 3, "header": ["x-user-id", "X-SMG-Routing-Key"]},
        },
        load={"concurrency": [3], "requests": 6},
    )
    _, records = run(sc, tmp_path)
    log = logged(mock.base_url)
    assert all("x-session-id" not in e["headers"] for e in log)  # only the names asked for
    conversations = by_conversation(log, "x-user-id")
    assert len(conversations) == 6 and all(len(v) == 3 for v in conversations.values())
    for value, entries in conversations.items():
        assert {e["headers"]["x-smg-routing-key"] for e in entries} == {value}  # both headers, one value
        # one conversation per value: each later turn carries that conversation's first message
        assert {e["body"]["messages"][0]["content"] for e in entries} == {entries[0]["body"]["messages"][0]["content"]}
    assert len({r.session for r in records}) == 6


def test_a_failed_turn_ends_its_conversation(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    """One user, three conversations of three turns; the mock fails every 5th request (4 answered, 5th is
    the second turn of the second conversation): that conversation ends there, the user starts the third."""
    mock = mock_server(ttft_ms=0, itl_ms=0, output_tokens=2, request_log=100, faults={"http_500": 0.2})
    sc = scenario(
        mock.base_url,
        workload={"prompt": {"synthetic": {"input_tokens": 8}}, "sessions": {"turns": 3}},
        load={"concurrency": [1], "requests": 3},
    )
    summary, records = run(sc, tmp_path)
    stats = mock_stats(mock.base_url)
    assert stats["requests"] == 8 and stats["faults"] == {"http_500": 1}  # 3 + 2 + 3 turns reached the mock
    turns = [len(v) for v in by_conversation(logged(mock.base_url)).values()]
    assert sorted(turns) == [2, 3, 3]
    failed = [r for r in records if r.status == "error"]
    assert [(r.turn, r.error_class) for r in failed] == [(2, "http_5xx")]
    assert not [r for r in records if r.session == failed[0].session and r.turn > 2]
    s = summary["steps"][0]["sessions"]
    assert (s["started"], s["completed"], s["failed"], s["cut"]) == (3, 2, 1, 0)
    assert sorted(s["turns_answered"][k] for k in ("p50", "max")) == [3.0, 3.0] and s["turns_answered"]["mean"] == 7 / 3
    assert [(t["requests"], t["ok"]) for t in s["by_turn"]] == [(3, 3), (3, 2), (2, 2)]


@pytest.mark.timing
def test_open_loop_starts_conversations_at_the_rate(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    """Rate 20/s, constant arrivals: the first turns reach the mock 50 ms apart; the second turns follow
    their own answers, not the schedule."""
    mock = mock_server(ttft_ms=5, itl_ms=0, output_tokens=2, request_log=100)
    sc = scenario(
        mock.base_url,
        workload={"prompt": {"synthetic": {"input_tokens": 8}}, "sessions": {"turns": 2}},
        load={"rate": [20], "arrival": "constant", "requests": 5},
    )
    summary, records = run(sc, tmp_path)
    firsts = sorted(v[0]["t"] for v in by_conversation(logged(mock.base_url)).values())
    gaps_ms = [(b - a) * 1e3 for a, b in itertools.pairwise(firsts)]
    assert len(firsts) == 5 and all(40 <= g <= 60 for g in gaps_ms), gaps_ms
    assert all((r.scheduled_ns is not None) == (r.turn == 1) for r in records)  # only a first turn is scheduled
    assert summary["steps"][0]["sessions"]["completed"] == 5 and summary["steps"][0]["requests"]["sent"] == 10


@pytest.mark.timing
def test_a_timed_step_sends_no_turn_after_its_end(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    mock = mock_server(ttft_ms=2, itl_ms=0, output_tokens=2, request_log=200)
    sc = scenario(
        mock.base_url,
        workload={"prompt": {"synthetic": {"input_tokens": 8}}, "sessions": {"turns": 50, "think_time_s": 0.05}},
        load={"concurrency": [2], "duration_s": 0.5},
    )
    summary, records = run(sc, tmp_path)
    first = min(r.sent_ns for r in records)
    assert max(r.sent_ns for r in records) - first <= 0.5e9  # nothing sent after the step's end
    s = summary["steps"][0]["sessions"]
    assert (s["started"], s["completed"], s["failed"], s["cut"]) == (2, 0, 0, 2)
    assert len(logged(mock.base_url)) == len(records) > 4  # each user got several turns in


def _think_gaps_ms(log: list[dict[str, Any]], answer_ms: float) -> list[float]:
    """Per conversation, the time between two turns' arrivals at the mock, minus the mock's answer time."""
    return [
        (b["t"] - a["t"]) * 1e3 - answer_ms
        for entries in by_conversation(log).values()
        for a, b in itertools.pairwise(entries)
    ]


# The mock answers 20 ms after a turn arrives (ttft_ms), so a turn that waited its think time from the
# answer's end arrives at least think + 20 ms after the previous one. How much later it comes is the two
# processes waking up on a loaded machine: beside a busy core, on this 2-core machine already at load 7,
# the median came 3-16 ms late in 6 runs of the constant test (the client's own wait, end to send, 1-8 ms).
MARGIN_MS = 40


@pytest.mark.timing
def test_constant_think_time_is_honoured(
    mock_server: Callable[..., MockProcess], tmp_path: Path, busy_neighbour: None
) -> None:
    """Each next turn arrives one think time after the previous answer: never sooner (counted from the
    send instead it would come 20 ms early), and the median late by at most the margin."""
    mock = mock_server(ttft_ms=20, itl_ms=0, output_tokens=2, request_log=100)
    sc = scenario(
        mock.base_url,
        workload={"prompt": {"synthetic": {"input_tokens": 8}}, "sessions": {"turns": 6, "think_time_s": 0.1}},
        load={"concurrency": [2], "requests": 2},
    )
    run(sc, tmp_path)
    gaps = _think_gaps_ms(logged(mock.base_url), answer_ms=20)
    assert len(gaps) == 10 and min(gaps) >= 100, gaps
    assert statistics.median(gaps) <= 100 + MARGIN_MS, gaps


@pytest.mark.timing
def test_exponential_think_time_has_its_mean_and_spread(
    mock_server: Callable[..., MockProcess], tmp_path: Path, busy_neighbour: None
) -> None:
    """24 exponential pauses of mean 100 ms: their mean within 2.5 standard errors (100 / sqrt(24) = 20 ms)
    plus the margin, and a spread like an exponential's (stddev = mean; a constant pause has none)."""
    mock = mock_server(ttft_ms=20, itl_ms=0, output_tokens=2, request_log=200)
    think = {"mean": 0.1, "dist": "exponential"}
    sc = scenario(
        mock.base_url,
        workload={"prompt": {"synthetic": {"input_tokens": 8}}, "sessions": {"turns": 7, "think_time_s": think}},
        load={"concurrency": [2], "requests": 4},
    )
    run(sc, tmp_path)
    gaps = _think_gaps_ms(logged(mock.base_url), answer_ms=20)
    assert len(gaps) == 24 and min(gaps) >= 0
    mean, sd = statistics.mean(gaps), statistics.stdev(gaps)
    assert 100 - 2.5 * 20 <= mean <= 100 + 2.5 * 20 + MARGIN_MS and sd / mean > 0.5, gaps


def test_live_progress_counts_conversations_as_they_end() -> None:
    """The progress display's count: with conversations, a conversation ends at its last turn or a failed one."""
    live = LiveStep()
    live(StepStarted(step_plan(Load(concurrency=[2], requests=2), 0, 2), 0))
    turns = [(0, 1, "ok"), (1, 1, "ok"), (0, 2, "ok"), (1, 2, "error"), (0, 3, "ok")]
    done = []
    for session, turn, status in turns:
        rec = RequestRecord(id=0, step=0, session=session, turn=turn, session_turns=3, status=status)  # type: ignore[arg-type]
        live(RequestDone(rec))
        done.append(live.done)
    assert done == [0, 0, 0, 1, 2]
    live(RequestDone(RequestRecord(id=9, step=0)))  # a single request counts as itself
    assert live.done == 3


def test_context_tokens_count_every_message_with_the_runs_tokenizer(
    mock_server: Callable[..., MockProcess], tmp_path: Path, llama_json: str
) -> None:
    """The mock stands in for a Llama-like model: its usage counts in its own tokens, which tiktoken counts
    differently. A record's context_tokens is every message it sent, counted by target.tokenizer
    (o200k_base here, counted again in this test), the answers included; input_tokens is the server's."""
    mock = mock_server(ttft_ms=0, itl_ms=0, output_tokens=12, request_log=10, tokenizer=llama_json)
    sc = scenario(
        mock.base_url,
        workload={"prompt": {"synthetic": {"input_tokens": 6}}, "sessions": {"turns": 3}},
        load={"concurrency": [1], "requests": 1},
    )
    _, records = run(sc, tmp_path)
    entries = sorted(logged(mock.base_url), key=lambda e: e["t"])
    sent = [sum(count_tokens(m["content"]) for m in e["body"]["messages"]) for e in entries]
    assert [r.context_tokens for r in sorted(records, key=lambda r: r.turn)] == sent
    assert any(count_tokens(e["answer"]) != 12 for e in entries)  # the model's 12 tokens are not tiktoken's 12
