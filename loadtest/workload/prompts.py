"""Prompts for the requests of a run: inline text, a JSONL file, or synthetic text of exact length.

A pool gives request ``i`` its prompt as ``pool[i]``: a text or a file's lines cycle (a file is the
user asking for repeats); synthetic prompts are new for every request (``synthetic.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from loadtest.config.scenario import FilePrompt, Scenario, ScenarioError, SyntheticPrompt, TextPrompt, Workload
from loadtest.workload.apis import api_pool
from loadtest.workload.images import EncodedImage
from loadtest.workload.servertok import ServerCounter
from loadtest.workload.synthetic import SyntheticPool, WordSet, local_words, server_words, synthetic_words_text
from loadtest.workload.tokens import TokenizerError, count_tokens

__all__ = ["CyclePool", "PromptItem", "PromptPool", "build_prompts", "run_prompts", "synthetic_text"]


@dataclass(frozen=True, slots=True)
class PromptItem:
    """One request body's prompt part, ready for either API."""

    messages: list[dict[str, Any]] | None
    prompt: str | None
    max_tokens: int
    input_tokens: int | None  # tokenizer count of the prompt text, when known
    images: tuple[EncodedImage, ...] = ()  # added to the last user message (workload.images)
    inputs: tuple[str, ...] | None = None  # embeddings: the batch of texts (workload.batch_size)


def synthetic_text(n_tokens: int, rng: np.random.Generator, encoding: str = "o200k_base") -> str:
    """Random words whose count under a local tokenizer is exactly ``n_tokens``."""
    return synthetic_words_text(n_tokens, rng, local_words(encoding))


class PromptPool(Protocol):
    def __getitem__(self, i: int) -> PromptItem: ...


class CyclePool:
    """A fixed list of prompts; request ``i`` gets ``items[i % len(items)]``."""

    def __init__(self, items: list[PromptItem]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> PromptItem:
        return self.items[i % len(self.items)]


def _item(
    text: str | None,
    messages: list[dict[str, Any]] | None,
    max_tokens: int,
    api: str,
    system: str | None,
    input_tokens: int | None,
) -> PromptItem:
    if api in ("chat", "responses"):  # messages; embeddings take a text, as completions
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


def _messages_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages)


def _synthetic_pool(workload: Workload, api: str, words: WordSet, count: Callable[[str], int]) -> SyntheticPool:
    spec = workload.prompt.synthetic  # type: ignore[union-attr]

    def make(text: str, n: int) -> PromptItem:
        return _item(text, None, workload.max_tokens, api, workload.system_prompt, n)

    pool = SyntheticPool(spec.input_tokens, spec.stddev, workload.seed, words, make)
    for i in range(8):  # the words promise exact lengths; check a few prompts with the tokenizer itself
        text, n = pool.text(i)
        if count(text) != n:
            raise TokenizerError(f"target.tokenizer: synthetic prompts cannot be made of exactly {n} tokens")
    return pool


def build_prompts(
    workload: Workload,
    api: Literal["chat", "completions", "responses", "embeddings"],
    encoding: str = "o200k_base",
    *,
    count: Callable[[str], int] | None = None,
    words: WordSet | None = None,
) -> PromptPool:
    """The prompt pool of a run; deterministic for a seed. ``count`` and ``words`` replace the
    local tokenizer ``encoding`` (``target.tokenizer: server`` counts through the endpoint)."""
    count = count if count is not None else partial(count_tokens, name=encoding)
    system = workload.system_prompt
    match workload.prompt:
        case TextPrompt(text=text):
            return CyclePool([_item(text, None, workload.max_tokens, api, system, count(text))])
        case FilePrompt(file=file):
            items = []
            for row in _read_jsonl(Path(file)):
                text, messages = row.get("prompt"), row.get("messages")
                n = count(text if text is not None else _messages_text(messages))
                items.append(_item(text, messages, row.get("max_tokens", workload.max_tokens), api, system, n))
            return CyclePool(items)
        case SyntheticPrompt():
            return _synthetic_pool(workload, api, words if words is not None else local_words(encoding), count)
    raise AssertionError("unreachable: prompt kind validated by the scenario model")


def run_prompts(scenario: Scenario, base_url: str, key: str) -> tuple[PromptPool, str | None]:
    """A run's prompts (or one worker's), counted by ``target.tokenizer``; with ``server``, also
    which tokenize route of the endpoint answered. Embeddings batches and images are added here (apis.py)."""
    t, w = scenario.target, scenario.workload
    if t.tokenizer != "server":
        return api_pool(build_prompts(w, t.api, t.tokenizer), w), None
    counter = ServerCounter(base_url, t.model, {"authorization": f"Bearer {key}", **t.headers}, t.timeout_s)
    try:
        words = server_words(counter.count) if isinstance(w.prompt, SyntheticPrompt) else None
        return api_pool(build_prompts(w, t.api, count=counter.count, words=words), w), counter.label
    finally:
        counter.close()
