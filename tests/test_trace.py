"""Trace replay (``load.trace``): Mooncake and plain JSONL, sent at the recorded times / speedup; hash ids
become shared prompt blocks. Checked at the mock: its request log's receive times and the bodies it got."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadtest.config.loading import load_scenario
from loadtest.config.scenario import Scenario, ScenarioError, Trace
from loadtest.mock import MockProcess
from loadtest.output.rundir import load_run, read_records
from loadtest.runner import execute
from loadtest.workload.prompts import build_prompts
from loadtest.workload.tokens import count_tokens
from loadtest.workload.trace import read_trace
from tests.conftest import ROOT, write

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TRACE = ROOT / "scenarios" / "data" / "mooncake-200.jsonl"


def mock_log(base_url: str) -> list[dict[str, Any]]:
    with _DIRECT.open(base_url.removesuffix("/v1") + "/mock/requests", timeout=5) as resp:
        return json.loads(resp.read())


def expected_common(a: dict[str, Any], b: dict[str, Any], block: int = 512) -> int:
    """Tokens two Mooncake rows share at the head, by hand: their leading equal hash ids' blocks (the
    last block of a row holds the rest of its input_length)."""

    def size(row: dict[str, Any], k: int) -> int:
        return min(block, row["input_length"] - k * block)

    shared = 0
    for k, (x, y) in enumerate(zip(a["hash_ids"], b["hash_ids"], strict=False)):
        if x != y:
            break
        shared += min(size(a, k), size(b, k))
        if size(a, k) != size(b, k):
            break
    return shared


def _mooncake(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    return write(tmp_path / "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def test_blocks_follow_hash_ids_and_lengths_are_exact(tmp_path: Path) -> None:
    rows = [
        {"timestamp": 0, "input_length": 1100, "output_length": 5, "hash_ids": [0, 1, 2]},
        {"timestamp": 10, "input_length": 1024, "output_length": 6, "hash_ids": [0, 1]},
        {"timestamp": 20, "input_length": 700, "output_length": 7, "hash_ids": [0, 3]},
        {"timestamp": 30, "input_length": 1600, "output_length": 8, "hash_ids": [0, 1, 4, 5]},
        {"timestamp": 40, "input_length": 300, "output_length": 9, "hash_ids": [6]},
    ]
    trace = Trace(path=str(_mooncake(tmp_path, rows)), run_nonce="7")
    sc = Scenario.model_validate({"name": "t", "load": {"trace": trace.model_dump()}})
    pool = build_prompts(sc.workload, "completions", trace=sc.load.trace)
    items = [pool[i] for i in range(5)]
    for it, row in zip(items, rows, strict=True):
        assert it.input_tokens == row["input_length"] == count_tokens(it.prompt, "o200k_base")
        assert it.max_tokens == row["output_length"]
    words = [it.prompt.split() for it in items]
    for i in range(5):
        for j in range(5):
            if i != j:
                n = next((k for k, (x, y) in enumerate(zip(words[i], words[j], strict=False)) if x != y), None)
                common = n if n is not None else min(len(words[i]), len(words[j]))
                want = expected_common(rows[i], rows[j])
                assert want <= common < want + 16, (i, j, common, want)
    assert [pool[5 + i].prompt for i in range(5)] != [it.prompt for it in items]  # the next step: new texts
    other = build_prompts(sc.workload, "completions", trace=trace.model_copy(update={"run_nonce": "8"}))
    assert all(other[i].prompt.split()[:8] != words[i][:8] for i in range(5))  # another run: nothing shared
    same = trace.model_copy(update={"nonce": "none"})
    a, b = (build_prompts(sc.workload, "completions", trace=same) for _ in range(2))
    assert [a[i].prompt for i in range(10)] == [b[i].prompt for i in range(10)]
    assert a[5].prompt == a[0].prompt  # nonce none: every step sends the same bytes


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not valid JSON"),
        ('{"timestamp": -1, "input_length": 10, "output_length": 1, "hash_ids": [0]}', "line 2: timestamp"),
        ('{"timestamp": 5, "input_length": 600, "output_length": 1, "hash_ids": [0]}', "line 2: hash_ids: 1 blocks"),
        ('{"timestamp": 5, "input_length": 10, "output_length": 0, "hash_ids": [0]}', "line 2: output_length"),
        ('{"timestamp": 5, "input_length": 10, "output_length": 1, "hash_ids": [-3]}', "line 2: hash_ids"),
    ],
)
def test_bad_trace_rows_are_one_line_errors_naming_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [0]}'
    path = write(tmp_path / "t.jsonl", good + "\n" + line + "\n")
    with pytest.raises(ScenarioError) as e:
        read_trace(Trace(path=str(path), format="mooncake"))
    assert str(e.value).startswith(f"{path}: {message}") and "\n" not in str(e.value)


def test_plain_rows_and_missing_files(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.jsonl",
        '{"timestamp": 2.5, "prompt": "later"}\n{"timestamp": 1, "messages": [{"role": "user", "content": "hi"}]}\n',
    )
    rows = read_trace(Trace(path=str(path), time_unit="s"))
    assert [(r.t_s, r.prompt) for r in rows] == [(0.0, None), (1.5, "later")]  # sorted, from the first row
    bad = write(tmp_path / "b.jsonl", '{"timestamp": 1, "text": "no prompt"}\n')
    with pytest.raises(ScenarioError, match=r"b.jsonl: line 1: expected \"prompt\""):
        read_trace(Trace(path=str(bad)))
    with pytest.raises(ScenarioError, match=r"load\.trace\.path: .*nope\.jsonl: file not found"):
        read_trace(Trace(path=str(tmp_path / "nope.jsonl")))


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ("{trace: {path: t.jsonl}, warmup_requests: 2}", "remove warmup_requests"),
        ("{trace: {path: t.jsonl}, rate: [2]}", "remove concurrency/rate"),
        ("{trace: {path: t.jsonl}, workers: 2}", "runs in one process"),
        ("{trace: {path: t.jsonl, speedup: 0}}", "load.trace.speedup.0"),
        ("{trace: {path: t.jsonl}, ramp: {from: 1, to: 2, over_s: 1}}", "either ramp or trace"),
    ],
)
def test_bad_trace_settings_are_one_line_errors(tmp_path: Path, load: str, message: str) -> None:
    path = write(tmp_path / "s.yaml", f"name: s\nload: {load}\n")
    with pytest.raises(ScenarioError, match=re.escape(message)) as e:
        load_scenario(path)
    assert str(e.value).startswith(str(path))


def test_a_trace_supplies_the_prompts(tmp_path: Path) -> None:
    write(tmp_path / "t.jsonl", '{"timestamp": 0, "prompt": "x"}\n')
    path = write(tmp_path / "s.yaml", "name: s\nworkload: {prompt: {text: hi}}\nload: {trace: {path: t.jsonl}}\n")
    with pytest.raises(ScenarioError, match=r"load\.trace supplies the prompts"):
        load_scenario(path)
    ok = write(tmp_path / "ok.yaml", "name: ok\nload: {trace: {path: t.jsonl, speedup: 2}}\n")
    sc = load_scenario(ok)
    assert sc.load.trace is not None and sc.load.trace.path == str(tmp_path / "t.jsonl")  # beside the scenario
    assert (sc.load.mode, sc.load.values, sc.load.requests) == ("trace", [2.0], None)


def _match_rows(log: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pair each logged request with its trace row: by prompt length and max_tokens, and where several rows
    have both alike, the one nearest in order (requests due close together may arrive in either order)."""
    rows = sorted(rows, key=lambda r: r["timestamp"])
    free = set(range(len(rows)))
    pairs = []
    for rank, e in enumerate(sorted(log, key=lambda e: e["t"])):
        size, mt = len(e["body"]["messages"][0]["content"].split()), e["body"]["max_tokens"]
        i = min(
            (i for i in free if rows[i]["input_length"] == size and rows[i]["output_length"] == mt),
            key=lambda i: abs(i - rank),
        )
        free.remove(i)
        pairs.append((e, rows[i]))
    return pairs


@pytest.mark.timing
def test_trace_replay_at_speedup_2_keeps_times_and_shares_prefixes(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in TRACE.read_text().splitlines()]
    assert len(rows) == 200
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=1, request_log=500)
    sc = Scenario.model_validate(
        {
            "name": "trace",
            "target": {"base_url": mock.base_url},
            "workload": {"max_tokens": 1},
            "load": {"trace": {"path": str(TRACE), "speedup": 2}},
        }
    )
    outcome = execute(sc, "trace.yaml", tmp_path, on_step=lambda s: None, report=False)
    (step,) = outcome.summary["steps"]
    assert (step["mode"], step["value"], step["requests"]["ok"]) == ("trace", 2.0, 200)
    assert step["schedule_lag_ms"]["p50"] is not None  # reported as for any open loop
    trace_s = np.array(sorted(r["timestamp"] for r in rows)) / 1000 / 2  # the trace's times, twice as fast
    records = sorted(read_records(outcome.run_dir / "requests.jsonl"), key=lambda r: r.scheduled_ns or 0)
    due_s = np.array([r.scheduled_ns or 0 for r in records]) / 1e9
    assert np.abs((due_s - due_s[0]) - trace_s).max() < 1e-6  # the replay's schedule is the trace's, exactly
    pairs = _match_rows(mock_log(mock.base_url), rows)
    got = np.array([e["t"] for e, _ in pairs])  # when the mock had each request whole (its own clock)
    off_ms = (got - np.array([r["timestamp"] for _, r in pairs]) / 1000 / 2) * 1e3
    err_ms = np.abs(off_ms - np.median(off_ms))  # against the trace, the clocks' offset taken out
    assert np.percentile(err_ms, 99) < 10, (np.sort(err_ms)[-5:], step["schedule_lag_ms"])
    assert all(e["body"]["max_tokens"] == r["output_length"] for e, r in pairs)  # the output length asked for
    # requests that shared hash ids in the trace share exactly those blocks at the server
    vocab: dict[str, int] = {}
    texts = [
        np.array([vocab.setdefault(w, len(vocab)) for w in e["body"]["messages"][0]["content"].split()])
        for e, _ in pairs
    ]
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            a, b = texts[i], texts[j]
            m = min(len(a), len(b))
            diff = np.flatnonzero(a[:m] != b[:m])
            common = int(diff[0]) if len(diff) else m
            want_common = expected_common(pairs[i][1], pairs[j][1])
            assert want_common <= common < want_common + 16, (i, j, common, want_common)
    assert len({r["hash_ids"][0] for r in rows}) == 1  # every row opens with block 0: all share a prefix
    again = load_run(outcome.run_dir)  # `loadtest report`: from scenario.yaml and requests.jsonl alone
    assert again.scenario.load.trace is not None and again.scenario.load.trace.run_nonce is not None
    assert again.summary["steps"][0]["requests"] == step["requests"]
