from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from loadtest.config.scenario import Scenario, ScenarioError, Workload
from loadtest.engine.driver import RunContext, RunPlan, Sinks
from loadtest.workload.prompts import build_prompts, run_prompts, synthetic_text
from loadtest.workload.synthetic import BLOCK
from loadtest.workload.tokens import count_tokens, get_encoding
from tests.conftest import write


@pytest.mark.parametrize("n", [1, 7, 128, 1000])
def test_synthetic_text_has_exact_token_count(n: int, llama_json: str, bytelevel_json: str) -> None:
    for enc in ("o200k_base", "cl100k_base"):
        assert len(get_encoding(enc).encode_ordinary(synthetic_text(n, np.random.default_rng(n), enc))) == n
    for path in (llama_json, bytelevel_json):  # counted by the tokenizers library itself, no special tokens
        text = synthetic_text(n, np.random.default_rng(n), path)
        assert len(Tokenizer.from_file(path).encode(text, add_special_tokens=False).ids) == n


def test_synthetic_pool_is_deterministic_with_mean_and_stddev() -> None:
    w = Workload.model_validate({"prompt": {"synthetic": {"input_tokens": 200, "stddev": 20}}, "seed": 7})
    a = [build_prompts(w, "chat")[i] for i in range(400)]
    b = [build_prompts(w, "chat")[i] for i in range(400)]
    assert a == b
    lengths = np.array([p.input_tokens for p in a])
    assert abs(lengths.mean() - 200) < 4 and 15 < lengths.std() < 25
    enc = get_encoding("o200k_base")
    for p in a[:50]:
        assert len(enc.encode_ordinary(p.messages[-1]["content"])) == p.input_tokens
    c = [build_prompts(w.model_copy(update={"seed": 8}), "chat")[i] for i in range(400)]
    assert c != a
    assert len({p.messages[0]["content"] for p in a}) == 400  # distinct prompts: no accidental prefix cache hits


def _requests_prompts(scenario: Scenario, n: int) -> list[str]:
    """The prompt texts of a run's first ``n`` requests, as the driver hands them out."""
    pool, _ = run_prompts(scenario, "", "")
    ctx = RunContext(RunPlan(scenario, "", "", 0), pool, Sinks(lambda e: None))
    return [ctx.next_prompt().messages[-1]["content"] for _ in range(n)]


@pytest.mark.parametrize("encoding", ["o200k_base", "llama"])
def test_synthetic_prompts_never_repeat_however_many_requests(encoding: str, llama_json: str) -> None:
    """A timed closed-loop step may send any number of requests (here 3 blocks of prompts, far past
    the old 2,048-prompt pool, and a pool of 1 before: concurrency 1 for 1 s): all distinct, all exact."""
    tok = llama_json if encoding == "llama" else encoding
    sc = Scenario.model_validate(
        {
            "name": "pool",
            "target": {"tokenizer": tok},
            "workload": {"prompt": {"synthetic": {"input_tokens": 24, "stddev": 4}}, "seed": 3},
            "load": {"concurrency": [1], "duration_s": 1},
        }
    )
    n = 2 * BLOCK + 1000
    texts = _requests_prompts(sc, n)
    assert len(set(texts)) == n
    if encoding == "llama":
        counts = [len(e.ids) for e in Tokenizer.from_file(tok).encode_batch(texts, add_special_tokens=False)]
    else:
        counts = [len(get_encoding(tok).encode_ordinary(t)) for t in texts]
    pool, _ = run_prompts(sc, "", "")
    assert counts == [pool[i].input_tokens for i in range(n)]
    assert 20 < np.mean(counts) < 28


def test_text_prompt_both_apis_with_system_prompt() -> None:
    w = Workload.model_validate({"prompt": {"text": "Say hi"}, "system_prompt": "Be brief", "max_tokens": 9})
    pool = build_prompts(w, "chat")
    chat = pool[0]
    assert pool[1] == chat and len(pool) == 1
    assert chat.messages == [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Say hi"}]
    assert chat.max_tokens == 9 and chat.input_tokens == count_tokens("Say hi")
    comp = build_prompts(w, "completions")[0]
    assert comp.prompt == "Be brief\nSay hi" and comp.messages is None


def test_jsonl_file_prompts(tmp_path: Path) -> None:
    f = write(
        tmp_path / "p.jsonl",
        '{"prompt": "one two", "max_tokens": 3}\n\n{"messages": [{"role": "user", "content": "hello"}]}\n',
    )
    w = Workload.model_validate({"prompt": {"file": str(f)}, "max_tokens": 50})
    pool = build_prompts(w, "chat")
    a, b = pool[0], pool[1]
    assert a.messages == [{"role": "user", "content": "one two"}] and a.max_tokens == 3
    assert b.messages == [{"role": "user", "content": "hello"}] and b.max_tokens == 50
    assert b.input_tokens == count_tokens("hello")
    assert [pool[i] for i in range(2, 7)] == [a, b, a, b, a]  # a file's prompts cycle: the user asked for repeats
    b2 = build_prompts(w, "completions")[1]
    assert b2.prompt == "hello"


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json}\n", r"p\.jsonl: line 1: not valid JSON"),
        ('{"prompt": "a"}\n{"text": "b"}\n', r"p\.jsonl: line 2: expected"),
        ('{"prompt": "a", "max_tokens": 0}\n', r"line 1: max_tokens"),
        ("\n", "no prompts in file"),
    ],
)
def test_bad_jsonl_is_a_scenario_error(tmp_path: Path, content: str, pattern: str) -> None:
    w = Workload.model_validate({"prompt": {"file": str(write(tmp_path / "p.jsonl", content))}})
    with pytest.raises(ScenarioError, match=pattern):
        build_prompts(w, "chat")


def test_missing_prompt_file(tmp_path: Path) -> None:
    w = Workload.model_validate({"prompt": {"file": str(tmp_path / "none.jsonl")}})
    with pytest.raises(ScenarioError, match=r"workload\.prompt\.file: .*none\.jsonl: file not found"):
        build_prompts(w, "chat")
