from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest.scenario import ScenarioError, Workload
from loadtest.tokens import count_tokens
from loadtest.workload import build_prompts, synthetic_text

from .conftest import write


@pytest.mark.parametrize("n", [1, 7, 128, 1000])
def test_synthetic_text_has_exact_token_count(n: int) -> None:
    for enc in ("o200k_base", "cl100k_base"):
        assert count_tokens(synthetic_text(n, np.random.default_rng(n), enc), enc) == n


def test_synthetic_pool_is_deterministic_with_mean_and_stddev() -> None:
    w = Workload.model_validate({"prompt": {"synthetic": {"input_tokens": 200, "stddev": 20}}, "seed": 7})
    a = build_prompts(w, "chat", 400)
    b = build_prompts(w, "chat", 400)
    assert a == b
    lengths = np.array([p.input_tokens for p in a])
    assert abs(lengths.mean() - 200) < 4 and 15 < lengths.std() < 25
    for p in a[:20]:
        assert count_tokens(p.messages[-1]["content"]) == p.input_tokens
    c = build_prompts(w.model_copy(update={"seed": 8}), "chat", 400)
    assert c != a
    assert len({p.messages[0]["content"] for p in a}) == 400  # distinct prompts: no accidental prefix cache hits


def test_text_prompt_both_apis_with_system_prompt() -> None:
    w = Workload.model_validate({"prompt": {"text": "Say hi"}, "system_prompt": "Be brief", "max_tokens": 9})
    (chat,) = build_prompts(w, "chat", 5)
    assert chat.messages == [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Say hi"}]
    assert chat.max_tokens == 9 and chat.input_tokens == count_tokens("Say hi")
    (comp,) = build_prompts(w, "completions", 5)
    assert comp.prompt == "Be brief\nSay hi" and comp.messages is None


def test_jsonl_file_prompts(tmp_path: Path) -> None:
    f = write(
        tmp_path / "p.jsonl",
        '{"prompt": "one two", "max_tokens": 3}\n\n{"messages": [{"role": "user", "content": "hello"}]}\n',
    )
    w = Workload.model_validate({"prompt": {"file": str(f)}, "max_tokens": 50})
    a, b = build_prompts(w, "chat", 10)
    assert a.messages == [{"role": "user", "content": "one two"}] and a.max_tokens == 3
    assert b.messages == [{"role": "user", "content": "hello"}] and b.max_tokens == 50
    _, b2 = build_prompts(w, "completions", 10)
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
        build_prompts(w, "chat", 1)


def test_missing_prompt_file(tmp_path: Path) -> None:
    w = Workload.model_validate({"prompt": {"file": str(tmp_path / "none.jsonl")}})
    with pytest.raises(ScenarioError, match=r"workload\.prompt\.file: .*none\.jsonl: file not found"):
        build_prompts(w, "chat", 1)
