"""Prompts for the requests of a run: inline text, a JSONL file, or synthetic text of exact length."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .scenario import FilePrompt, ScenarioError, SyntheticPrompt, TextPrompt, Workload
from .tokens import count_tokens, get_encoding

__all__ = ["PromptItem", "build_prompts", "synthetic_text"]

_POOL_CAP = 2048  # distinct synthetic prompts per run; beyond that they repeat in order


@dataclass(frozen=True, slots=True)
class PromptItem:
    """One request body's prompt part, ready for either API."""

    messages: list[dict[str, Any]] | None
    prompt: str | None
    max_tokens: int
    input_tokens: int | None  # tokenizer count of the prompt text, when known


@cache
def _word_tokens(encoding: str) -> tuple[str, ...]:
    """Vocabulary entries like ' river': each one token alone and one token inside any run of them."""
    enc = get_encoding(encoding)
    words = [b.decode() for b in enc.token_byte_values() if re.fullmatch(rb" [a-z]{3,9}", b)]
    return tuple(sorted(w for w in words if len(enc.encode_ordinary(w)) == 1))


def synthetic_text(n_tokens: int, rng: np.random.Generator, encoding: str = "o200k_base") -> str:
    """Random words whose tokenizer count is exactly ``n_tokens``."""
    words = _word_tokens(encoding)
    text = "".join(words[i] for i in rng.integers(0, len(words), size=n_tokens))
    enc = get_encoding(encoding)
    ids = enc.encode_ordinary(text)
    if len(ids) != n_tokens:  # not expected with single-token words, but never report a wrong length
        text = enc.decode(ids[:n_tokens])
        if len(enc.encode_ordinary(text)) != n_tokens:
            raise ScenarioError(f"workload.prompt.synthetic: cannot build a prompt of exactly {n_tokens} tokens")
    return text


def _item(
    text: str | None,
    messages: list[dict[str, Any]] | None,
    max_tokens: int,
    api: Literal["chat", "completions"],
    system: str | None,
    input_tokens: int | None,
) -> PromptItem:
    if api == "chat":
        if messages is None:
            messages = [{"role": "user", "content": text}]
        if system is not None and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": system}, *messages]
        return PromptItem(messages=messages, prompt=None, max_tokens=max_tokens, input_tokens=input_tokens)
    if text is None:
        text = "\n".join(str(m.get("content", "")) for m in messages or [])
    if system is not None:
        text = f"{system}\n{text}"
    return PromptItem(messages=None, prompt=text, max_tokens=max_tokens, input_tokens=input_tokens)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ScenarioError(f"workload.prompt.file: {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"workload.prompt.file: {path}: cannot read ({e.__class__.__name__})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ScenarioError(f"{path}: line {n}: not valid JSON") from None
        ok_prompt = isinstance(row, dict) and isinstance(row.get("prompt"), str)
        ok_messages = (
            isinstance(row, dict)
            and isinstance(row.get("messages"), list)
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in row["messages"])
        )
        if not (ok_prompt or ok_messages):
            raise ScenarioError(f'{path}: line {n}: expected {{"prompt": str}} or {{"messages": [{{role, content}}]}}')
        mt = row.get("max_tokens")
        if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
            raise ScenarioError(f"{path}: line {n}: max_tokens: expected a positive integer, got {mt!r}")
        rows.append(row)
    if not rows:
        raise ScenarioError(f"workload.prompt.file: {path}: no prompts in file")
    return rows


def build_prompts(
    workload: Workload, api: Literal["chat", "completions"], count: int, encoding: str = "o200k_base"
) -> list[PromptItem]:
    """The prompt pool; request ``i`` of a run uses ``pool[i % len(pool)]``. Deterministic for a seed."""
    system = workload.system_prompt
    match workload.prompt:
        case TextPrompt(text=text):
            return [_item(text, None, workload.max_tokens, api, system, count_tokens(text, encoding))]
        case FilePrompt(file=file):
            items = []
            for row in _read_jsonl(Path(file)):
                text = row.get("prompt")
                n = count_tokens(text, encoding) if text is not None else None
                items.append(
                    _item(text, row.get("messages"), row.get("max_tokens", workload.max_tokens), api, system, n)
                )
            return items
        case SyntheticPrompt(synthetic=spec):
            rng = np.random.default_rng(workload.seed)
            size = max(1, min(count, _POOL_CAP))
            lengths = np.rint(rng.normal(spec.input_tokens, spec.stddev, size=size)).astype(int)
            lengths = np.clip(lengths, 1, None)
            return [
                _item(synthetic_text(int(n), rng, encoding), None, workload.max_tokens, api, system, int(n))
                for n in lengths
            ]
    raise AssertionError("unreachable: prompt kind validated by the scenario model")
