"""Datasets (``workload.prompt.dataset``): formats, vLLM's length filters, seeded sampling, bad files.

Lengths here are counted by whitespace (``words``), so every expected count is computed by hand
from the rows written in the test; one run against the mock checks what reaches the server.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtest.config.loading import load_scenario
from loadtest.config.scenario import DatasetSpec, ScenarioError
from loadtest.mock import MockProcess
from loadtest.output.rundir import load_run, read_records
from loadtest.runner import execute
from loadtest.workload.datasets import load_dataset
from loadtest.workload.prompts import dataset_info, run_prompts
from loadtest.workload.tokens import count_tokens
from tests.conftest import ROOT, write
from tests.test_mock import logged


def words(text: str) -> int:
    return len(text.split())


def w(n: int, tag: str = "w") -> str:
    """A text of exactly n words."""
    return " ".join(f"{tag}{i}" for i in range(n))


def sharegpt(*turns: str, system: str | None = None) -> dict[str, Any]:
    """A ShareGPT row: human and gpt alternating from the first turn."""
    conv = [{"from": "system", "value": system}] if system else []
    conv += [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(turns)]
    return {"conversations": conv}


# (row, why vLLM's default filters drop it as a single request: min 4 in and out, in <= 1024, in + out <= 2048)
ROWS: list[tuple[dict[str, Any], str | None]] = [
    (sharegpt(w(4), w(4)), None),  # both at the minimum: kept
    (sharegpt(w(3), w(50)), "input_too_short"),
    (sharegpt(w(10), w(3)), "output_too_short"),
    (sharegpt(w(1025), w(10)), "input_too_long"),
    (sharegpt(w(1024), w(1024)), None),  # 2048 in all: kept
    (sharegpt(w(1024), w(1025)), "total_too_long"),
    (sharegpt(w(6), w(6), w(2), w(9)), None),  # turn 2 is short, but single requests use turn 1 only
    (sharegpt(w(5), w(7), system=w(3)), None),  # the system message counts in the first input: 8
    (sharegpt(w(2), w(7), system=w(3)), None),  # 2 + 3 = 5 in: kept
    ({"conversations": [{"from": "gpt", "value": w(9)}, *sharegpt(w(7), w(8))["conversations"]]}, None),
    (sharegpt(w(7), w(8), w(9), w(10)), None),
    ({"conversations": [{"from": "human", "value": w(5)}, {"from": "human", "value": w(5)}]}, "not_alternating"),
    ({"conversations": [{"from": "human", "value": w(5)}, {"from": "robot", "value": w(5)}]}, "unknown_speaker"),
    ({"conversations": [{"from": "gpt", "value": w(5)}]}, "no_exchange"),
    (sharegpt(w(8)), "no_answer"),  # a question without an answer has no answer length
]


def dataset_file(tmp_path: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    return write(tmp_path / "d.json", json.dumps([r for r, _ in ROWS] if rows is None else rows, indent=1))


def expected_drops() -> dict[str, int]:
    out: dict[str, int] = {}
    for _, why in ROWS:
        if why is not None:
            out[why] = out.get(why, 0) + 1
    return out


def load(path: Path, turns: int = 1, seed: int = 1, **spec: Any) -> Any:
    return load_dataset(DatasetSpec(path=str(path), **spec), seed=seed, turns=turns, max_tokens=64, count=words)


def test_vllm_default_filters_keep_and_drop_the_hand_counted_rows(tmp_path: Path) -> None:
    data = load(dataset_file(tmp_path))
    info = data.info()
    kept = sum(why is None for _, why in ROWS)
    assert (info["rows"], info["kept"], info["used"]) == (len(ROWS), kept, kept) == (15, 7, 7)
    assert info["dropped"] == expected_drops()
    assert info["sha256"] == hashlib.sha256((tmp_path / "d.json").read_bytes()).hexdigest()
    by_line = sorted(data.conversations, key=lambda c: c.line)
    # each kept row's input (its system message and first question) and answer length, in file order
    firsts = [(c.system_tokens + c.turns[0].tokens, c.turns[0].max_tokens) for c in by_line]
    assert firsts == [(4, 4), (1024, 1024), (6, 6), (8, 7), (5, 7), (7, 8), (7, 8)]


def test_filters_are_named_and_a_fixed_output_length_skips_the_output_check(tmp_path: Path) -> None:
    path = dataset_file(tmp_path)
    # no limits at all: only rows that cannot be used at all are dropped
    loose = load(path, min_input_tokens=0, min_output_tokens=0, max_input_tokens=None, max_total_tokens=None)
    structural = {"not_alternating": 1, "unknown_speaker": 1, "no_exchange": 1, "no_answer": 1}
    assert loose.info()["dropped"] == structural and loose.kept == 11
    # output_tokens fixed at 3: no output minimum; an unanswered question is a turn now; totals use 3
    fixed = load(path, output_tokens=3)
    assert fixed.info()["dropped"] == {
        "input_too_short": 1,
        "input_too_long": 1,
        "not_alternating": 1,
        "unknown_speaker": 1,
        "no_exchange": 1,
    }
    assert fixed.kept == 10 and all(t.max_tokens == 3 for c in fixed.conversations for t in c.turns)


def test_conversations_use_every_turn_and_filter_each(tmp_path: Path) -> None:
    data = load(dataset_file(tmp_path), turns=100)
    # as conversations, the row whose second question has 2 words is dropped too; the 1024+1024 row
    # stays (one exchange); the two-exchange row totals 7 + 8 + 9 + 10 = 34
    assert data.info()["dropped"] == {**expected_drops(), "input_too_short": 2}
    (two,) = [c for c in data.conversations if len(c.turns) == 2]
    assert [(t.tokens, t.max_tokens) for t in two.turns] == [(7, 8), (9, 10)]
    capped = load(dataset_file(tmp_path), turns=1)
    assert all(len(c.turns) == 1 for c in capped.conversations)


def test_sampling_is_seeded_without_repeats_and_shuffle_false_keeps_file_order(tmp_path: Path) -> None:
    rows = [sharegpt(w(4 + i, f"r{i}-"), w(5)) for i in range(20)]  # 20 valid rows, row i has 4 + i words
    path = dataset_file(tmp_path, rows)

    def firsts(**kw: Any) -> list[int]:
        return [conv.turns[0].tokens for conv in load(path, **kw).conversations]

    a, b, c = firsts(rows=6, seed=3), firsts(rows=6, seed=3), firsts(rows=6, seed=4)
    assert a == b and len(set(a)) == 6 and set(a) <= set(range(4, 24)) and a != c
    every = firsts(seed=3)
    assert sorted(every) == list(range(4, 24)) and every[:6] == a  # a sample is the shuffled order's head
    in_order = firsts(rows=5, shuffle=False)
    assert in_order == [4, 5, 6, 7, 8]
    with pytest.raises(ScenarioError, match=r"rows: 21 asked for, but only 20 of the 20 rows"):
        load(path, rows=21)


def test_openai_chat_and_plain_prompt_jsonl(tmp_path: Path) -> None:
    chat = [
        {"messages": [{"role": "system", "content": w(2)}, {"role": "user", "content": w(5)}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": w(6)}]},
                {"role": "assistant", "content": w(9)},
            ]
        },
    ]
    path = write(tmp_path / "c.jsonl", "\n".join(json.dumps(r) for r in chat) + "\n")
    data = load(path, output_tokens=12)
    assert data.info()["format"] == "openai" and data.kept == 2
    assert sorted((c.system_tokens, c.turns[0].tokens) for c in data.conversations) == [(0, 6), (2, 5)]
    plain = write(tmp_path / "p.jsonl", '{"prompt": "' + w(5) + '", "max_tokens": 7}\n{"prompt": "' + w(3) + '"}\n')
    data = load(plain, shuffle=False)
    assert data.info()["format"] == "prompts" and data.info()["dropped"] == {"input_too_short": 1}
    assert [(t.tokens, t.max_tokens) for c in data.conversations for t in c.turns] == [(5, 7)]  # its own max_tokens


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"conversations": []},\n {"conversations": [{"from": "human"}]}]', r"line 2: conversations\[0\]\.value"),
        (
            '{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": "x"}\n',
            r"line 2: messages: expected a list",
        ),
        ('{"prompt": "a"}\n\n{"prompt": 3}\n', r"line 3: prompt: expected a string"),
        ('{"prompt": "a b c d"}\n{"prompt": "a", "max_tokens": 0}\n', r"line 2: max_tokens: expected a positive"),
        ('[{"conversations": [{"from": 1, "value": "x"}]}]', r"line 1: conversations\[0\]\.from: expected a string"),
        ('{"prompt": "a"}\n{"prompt": "b"\n', r"line 2: not valid JSON"),
        ('[\n{"conversations": []},\n{"conversations": [}\n]', r"line 3: not valid JSON"),
        ('{"text": "x"}\n', r'line 1: expected "conversations" \(ShareGPT\), "messages"'),
        ("\n\n", r"no rows in the file"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", text)
    with pytest.raises(ScenarioError, match=message) as err:
        load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_run_with_a_bad_dataset_stops_before_writing_anything(tmp_path: Path) -> None:
    """The runner reads the file before the run directory exists; the CLI prints the one line and exits 2."""
    write(tmp_path / "bad.json", '[{"conversations": [{"from": "human", "value": 5}]}]')
    sc = write(tmp_path / "s.yaml", "name: ds\nworkload: {prompt: {dataset: {path: bad.json}}}\nload: {requests: 1}\n")
    with pytest.raises(ScenarioError) as err:
        execute(load_scenario(sc), str(sc), tmp_path / "r", on_step=lambda s: None, report=False)
    assert (
        str(err.value)
        == f"{tmp_path / 'bad.json'}: line 1: conversations[0].value: expected a string (or a list of text parts)"
    )
    assert not (tmp_path / "r").exists()


def test_a_dataset_run_sends_its_rows_and_describes_the_file_in_the_summary(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    """Single requests from a ShareGPT file: each request is a kept row's first question, with the
    answer's length (o200k_base tokens, counted here) as max_tokens; summary.json has the file's sha256."""
    mock = mock_server(ttft_ms=0, itl_ms=0, output_tokens=500, request_log=50)
    rows = [
        sharegpt("What is the tallest mountain in Europe?", "Mount Elbrus, in the Caucasus, at 5,642 metres."),
        sharegpt("Hi", "Hello there, how can I help?"),  # 1 token: dropped
        sharegpt("Name three primary colours, please.", "Red, yellow and blue are the traditional three."),
        sharegpt("How many legs does a spider have?", "Eight."),  # the answer is 2 tokens: dropped
    ]
    path = dataset_file(tmp_path, rows)
    sc = write(
        tmp_path / "s.yaml",
        f"name: ds\ntarget: {{base_url: {mock.base_url}}}\n"
        "workload: {prompt: {dataset: {path: d.json}}, seed: 5}\nload: {concurrency: [1], requests: 4}\n",
    )
    outcome = execute(load_scenario(sc), str(sc), tmp_path / "r", on_step=lambda s: None, report=False)
    info = outcome.summary["dataset"]
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (info["rows"], info["kept"], info["dropped"]) == (4, 2, {"input_too_short": 1, "output_too_short": 1})
    sent = [(e["body"]["messages"][-1]["content"], e["body"]["max_tokens"]) for e in logged(mock.base_url)]
    kept = {r["conversations"][0]["value"]: count_tokens(r["conversations"][1]["value"]) for r in (rows[0], rows[2])}
    assert len(sent) == 4 and set(sent) == set(kept.items())  # two rows, cycled: each sent twice
    assert sent[:2] == sent[2:]
    records = list(read_records(outcome.run_dir / "requests.jsonl"))
    assert [r.output_tokens for r in records] == [mt for _, mt in sent]
    assert json.loads((outcome.run_dir / "summary.json").read_text())["dataset"] == info
    assert load_run(outcome.run_dir).summary["dataset"] == info  # `loadtest report` keeps what the run read


def test_the_chat_sessions_scenario_reads_its_sample_as_conversations() -> None:
    """scenarios/chat-sessions.yaml (make chat-sessions): its 12 rows, one with two user messages in a row
    (dropped); with min_input_tokens 1 the short "Hi", "Ok" and "Thanks!" turns stay."""
    sc = load_scenario(ROOT / "scenarios" / "chat-sessions.yaml")
    pool, _ = run_prompts(sc, "", "")
    info = dataset_info(pool)
    assert info is not None and (info["rows"], info["kept"], info["dropped"]) == (12, 11, {"not_alternating": 1})
    sample = json.loads((ROOT / "scenarios" / "data" / "chat-sample.json").read_text())
    assert info["sha256"] == hashlib.sha256((ROOT / "scenarios" / "data" / "chat-sample.json").read_bytes()).hexdigest()
    # every exchange is a turn: each answer that follows a question (sample-05 opens with an answer)
    kept = [r["conversations"] for r in sample if r["id"] != "sample-08"]
    answered = [sum(a["from"] == "human" and b["from"] == "gpt" for a, b in itertools.pairwise(c)) for c in kept]
    assert sorted(len(pool.session(k).turns) for k in range(11)) == sorted(answered)
