"""Prompts for the requests of a run: inline text, a JSONL file, synthetic text of exact length,
shared-prefix groups (``shared.py``) or a trace's rows (``trace.py``).

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

from loadtest.config.scenario import (
    DatasetPrompt,
    FilePrompt,
    Scenario,
    ScenarioError,
    SharedPrefixPrompt,
    SyntheticPrompt,
    TextPrompt,
    Trace,
    Workload,
)
from loadtest.workload.apis import api_pool
from loadtest.workload.datasets import Dataset, load_dataset
from loadtest.workload.files import read_lines
from loadtest.workload.images import EncodedImage
from loadtest.workload.servertok import ServerCounter
from loadtest.workload.shared import SharedPrefixPool, new_run_nonce
from loadtest.workload.synthetic import SyntheticPool, WordSet, local_words, server_words, synthetic_words_text
from loadtest.workload.tokens import TokenizerError, count_tokens
from loadtest.workload.trace import TracePool, read_trace

__all__ = [
    "CyclePool",
    "DatasetPool",
    "PromptItem",
    "PromptPool",
    "build_prompts",
    "dataset_info",
    "fix_run_nonces",
    "run_prompts",
    "synthetic_text",
]


@dataclass(frozen=True, slots=True)
class PromptItem:
    """One request body's prompt part, ready for either API."""

    messages: list[dict[str, Any]] | None
    prompt: str | None
    max_tokens: int
    input_tokens: int | None  # tokenizer count of the prompt text, when known
    group: int | None = None  # shared-prefix group (workload.prompt.shared_prefix, or a file's "group")
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


class DatasetPool(CyclePool):
    """A dataset's kept rows as single requests (each row's first exchange), in their sampled order."""

    def __init__(self, items: list[PromptItem], dataset: Dataset) -> None:
        super().__init__(items)
        self.dataset = dataset


def dataset_info(pool: PromptPool) -> dict[str, Any] | None:
    """summary.json's ``dataset``: the file's sha256, its rows kept and dropped (None: no dataset)."""
    data = getattr(pool, "dataset", None)
    return data.info() if isinstance(data, Dataset) else None


def _item(
    text: str | None,
    messages: list[dict[str, Any]] | None,
    max_tokens: int,
    api: str,
    system: str | None,
    input_tokens: int | None,
    group: int | None = None,
) -> PromptItem:
    if api in ("chat", "responses"):  # messages; embeddings take a text, as completions
        if messages is None:
            messages = [{"role": "user", "content": text}]
        if system is not None and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": system}, *messages]
        return PromptItem(messages=messages, prompt=None, max_tokens=max_tokens, input_tokens=input_tokens, group=group)
    if text is None:
        text = "\n".join(str(m.get("content", "")) for m in messages or [])
    if system is not None:
        text = f"{system}\n{text}"
    return PromptItem(messages=None, prompt=text, max_tokens=max_tokens, input_tokens=input_tokens, group=group)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = read_lines(path, "workload.prompt.file")
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
        g = row.get("group")
        if g is not None and (not isinstance(g, int) or isinstance(g, bool) or g < 0):
            raise ScenarioError(f"{path}: line {n}: group: expected an integer >= 0, got {g!r}")
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


def _shared_pool(
    workload: Workload, api: Literal["chat", "completions"], words: WordSet, count: Callable[[str], int]
) -> SharedPrefixPool:
    spec = workload.prompt.shared_prefix  # type: ignore[union-attr]

    def make(text: str, n: int, group: int) -> PromptItem:
        return _item(text, None, workload.max_tokens, api, workload.system_prompt, n, group)

    pool = SharedPrefixPool(spec, workload.seed, words, make)
    for i in range(2):  # exact lengths, checked with the tokenizer itself
        text, n, _ = pool.text(i)
        if count(text) != n:
            raise TokenizerError(f"target.tokenizer: shared-prefix prompts cannot be made of exactly {n} tokens")
    return pool


def _trace_pool(
    trace: Trace, workload: Workload, api: Literal["chat", "completions"], words: WordSet, count: Callable[[str], int]
) -> TracePool:
    def make(text: str | None, messages: list[dict[str, Any]] | None, max_tokens: int, n: int | None) -> PromptItem:
        if n is None:
            n = count(text if text is not None else _messages_text(messages or []))
        return _item(text, messages, max_tokens, api, workload.system_prompt, n)

    return TracePool(read_trace(trace), trace, words, workload.max_tokens, make)


def _dataset_pool(workload: Workload, api: Literal["chat", "completions"], count: Callable[[str], int]) -> DatasetPool:
    spec = workload.prompt.dataset  # type: ignore[union-attr]
    data = load_dataset(spec, seed=workload.seed, turns=1, max_tokens=workload.max_tokens, count=count)
    items = []
    for conv in data.conversations:
        (turn,) = conv.turns
        messages = [{"role": "user", "content": turn.user}]
        if conv.system is not None:
            messages.insert(0, {"role": "system", "content": conv.system})
        n = conv.system_tokens + turn.tokens
        items.append(_item(None, messages, turn.max_tokens, api, workload.system_prompt, n))
    return DatasetPool(items, data)


def build_prompts(
    workload: Workload,
    api: Literal["chat", "completions", "responses", "embeddings"],
    encoding: str = "o200k_base",
    *,
    count: Callable[[str], int] | None = None,
    words: WordSet | None = None,
    trace: Trace | None = None,
) -> PromptPool:
    """The prompt pool of a run; deterministic for a seed. ``count`` and ``words`` replace the
    local tokenizer ``encoding`` (``target.tokenizer: server`` counts through the endpoint); a
    ``trace`` (load.trace) supplies the prompts instead of ``workload.prompt``."""
    local = count is None
    count = count if count is not None else partial(count_tokens, name=encoding)
    system = workload.system_prompt
    if trace is not None:
        return _trace_pool(trace, workload, api, words if words is not None else local_words(encoding), count)
    if workload.sessions is not None:  # conversations: their own pool (sessions.py imports this module)
        from loadtest.workload.sessions import session_pool

        def word_set() -> WordSet:  # only synthetic messages need the words
            return words if words is not None else local_words(encoding)

        return session_pool(workload, api, count, word_set, local=local)
    match workload.prompt:
        case TextPrompt(text=text):
            return CyclePool([_item(text, None, workload.max_tokens, api, system, count(text))])
        case FilePrompt(file=file):
            items = []
            for row in _read_jsonl(Path(file)):
                text, messages = row.get("prompt"), row.get("messages")
                n = count(text if text is not None else _messages_text(messages))
                mt = row.get("max_tokens", workload.max_tokens)
                items.append(_item(text, messages, mt, api, system, n, row.get("group")))
            return CyclePool(items)
        case SyntheticPrompt():
            return _synthetic_pool(workload, api, words if words is not None else local_words(encoding), count)
        case SharedPrefixPrompt():
            return _shared_pool(workload, api, words if words is not None else local_words(encoding), count)
        case DatasetPrompt():
            return _dataset_pool(workload, api, count)
    raise AssertionError("unreachable: prompt kind validated by the scenario model")


def run_prompts(scenario: Scenario, base_url: str, key: str) -> tuple[PromptPool, str | None]:
    """A run's prompts (or one worker's), counted by ``target.tokenizer``; with ``server``, also
    which tokenize route of the endpoint answered. Embeddings batches and images are added here (apis.py)."""
    t, w, trace = scenario.target, scenario.workload, scenario.load.trace
    if t.tokenizer != "server":
        return api_pool(build_prompts(w, t.api, t.tokenizer, trace=trace), w), None
    counter = ServerCounter(base_url, t.model, {"authorization": f"Bearer {key}", **t.headers}, t.timeout_s)
    try:
        made = trace is not None or isinstance(w.prompt, SyntheticPrompt | SharedPrefixPrompt)  # of our words
        words = server_words(counter.count) if made else None
        return api_pool(build_prompts(w, t.api, count=counter.count, words=words, trace=trace), w), counter.label
    finally:
        counter.close()


def fix_run_nonces(scenario: Scenario) -> Scenario:
    """The scenario of one run: a fresh nonce where shared prefixes or a trace want one per run (and none
    is given), and the prefixes' seed, so that every worker builds the same prefixes and the run's
    scenario.yaml records both (``--set ...run_nonce=`` repeats a run's prompts)."""
    sc = scenario.model_copy(deep=True)
    prompt, trace = sc.workload.prompt, sc.load.trace
    if isinstance(prompt, SharedPrefixPrompt):
        spec = prompt.shared_prefix
        spec.seed = spec.seed if spec.seed is not None else sc.workload.seed
        if spec.nonce != "none" and spec.run_nonce is None:
            spec.run_nonce = new_run_nonce()
    if trace is not None and trace.nonce == "run" and trace.run_nonce is None:
        trace.run_nonce = new_run_nonce()
    return sc
