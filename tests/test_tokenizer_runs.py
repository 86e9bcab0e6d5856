"""Counting with the model's tokenizer: a mock that generates with a Llama-like tokenizer.json and,
like llama-cpp-python's server, sends no usage. The mock's own counts are the reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtest.config.scenario import Scenario, ScenarioError
from loadtest.mock import MockProcess
from loadtest.output.rundir import read_records
from loadtest.runner import execute

OUT = 48  # what the mock generates for every request (its own count)


def run(base_url: str, tmp_path: Path, tokenizer: str, *, synthetic: int = 16) -> tuple[dict[str, Any], list, list]:
    sc = Scenario.model_validate(
        {
            "name": "tok",
            "target": {"base_url": base_url, "model": "llama-3.2-1b-instruct", "tokenizer": tokenizer},
            "workload": {"prompt": {"synthetic": {"input_tokens": synthetic}}, "max_tokens": 64},
            "load": {"concurrency": [2], "requests": 6},
        }
    )
    warnings: list[str] = []
    outcome = execute(sc, "tok.yaml", tmp_path, on_step=lambda s: None, warn=warnings.append, report=False)
    return outcome.summary, list(read_records(outcome.run_dir / "requests.jsonl")), warnings


def test_tiktoken_miscounts_a_llama_like_model_and_the_run_says_so(
    mock_server: Callable[..., MockProcess], tmp_path: Path, llama_json: str
) -> None:
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=OUT, usage=False, tokenizer=llama_json)
    summary, records, warnings = run(mock.base_url, tmp_path, "o200k_base")
    assert len(records) == 6 and all(r.status == "ok" and r.tokens_source == "tiktoken" for r in records)
    assert all(r.output_tokens != OUT for r in records)  # the reported failure: o200k counts, not the model's
    assert summary["tokenizer"] == {"name": "o200k_base", "source": "tiktoken", "assumed": True}
    (warning,) = warnings
    assert warning.startswith("6 requests without usage were counted with o200k_base, which is not the tokenizer")


def test_the_models_tokenizer_json_counts_exactly(
    mock_server: Callable[..., MockProcess], tmp_path: Path, llama_json: str
) -> None:
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=OUT, usage=False, tokenizer=llama_json)
    summary, records, warnings = run(mock.base_url, tmp_path, llama_json)
    assert len(records) == 6 and all(r.tokens_source == "hf" and r.output_tokens == OUT for r in records)
    assert summary["tokenizer"] == {"name": llama_json, "source": "hf", "assumed": False} and warnings == []
    assert summary["steps"][0]["tokens_source"] == {"hf": 6}


@pytest.mark.parametrize(
    ("tokenize", "route"),
    [
        ("all", "POST /tokenize (vLLM/SGLang)"),
        ("llama-server", "POST /tokenize (llama-server)"),  # answers the vLLM shape with no tokens: next one
        ("llama-cpp-python", "POST /extras/tokenize (llama-cpp-python)"),  # adds a BOS to every count
    ],
)
def test_the_servers_tokenize_route_counts_exactly(
    mock_server: Callable[..., MockProcess], tmp_path: Path, llama_json: str, tokenize: str, route: str
) -> None:
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=OUT, usage=False, tokenizer=llama_json, tokenize=tokenize)
    summary, records, warnings = run(mock.base_url, tmp_path, "server")
    assert len(records) == 6 and all(r.tokens_source == "server" and r.output_tokens == OUT for r in records)
    assert summary["tokenizer"] == {"name": "server", "source": "server", "assumed": False, "route": route}
    assert warnings == []


@pytest.mark.parametrize("tokenizer", ["llama_json", "server"])
def test_synthetic_prompts_are_exact_under_the_models_tokenizer(
    mock_server: Callable[..., MockProcess], tmp_path: Path, llama_json: str, tokenizer: str
) -> None:
    """The mock's usage reports its own count of each prompt: exactly what was asked for, where
    prompts built for o200k_base miss it."""
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=4, tokenizer=llama_json, tokenize="llama-cpp-python")
    _, records, _ = run(mock.base_url, tmp_path / "o200k", "o200k_base", synthetic=40)
    assert all(r.tokens_source == "usage" for r in records) and any(r.input_tokens != 40 for r in records)
    _, records, _ = run(
        mock.base_url, tmp_path / "model", llama_json if tokenizer == "llama_json" else tokenizer, synthetic=40
    )
    assert len(records) == 6 and all(r.tokens_source == "usage" and r.input_tokens == 40 for r in records)


def test_a_server_without_a_tokenize_route_is_a_one_line_error(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=4, usage=False, tokenize="none")
    with pytest.raises(ScenarioError) as err:
        run(mock.base_url, tmp_path, "server")
    root = mock.base_url.removesuffix("/v1")
    assert str(err.value) == (
        f"tok.yaml: target.tokenizer: server: no tokenize route answered at {root} (tried POST /tokenize "
        "(vLLM/SGLang), POST /tokenize (llama-server), POST /extras/tokenize (llama-cpp-python))"
    )
