"""Synthetic prompts: exactly ``n`` tokens under the chosen tokenizer, a new one for every request.

Words: vocabulary entries that are one token as a text's first word (``word``) and one token
after a space inside a text (`` word``), so a text of ``n`` such words is ``n`` tokens (every
tokenizer in use splits text at spaces before merging, so neighbours never merge). For a local
tokenizer every candidate is checked; for ``server`` the endpoint counts groups of tiktoken words.

Prompts: one long random run of words per block of 4,096 requests, built once with one join;
request ``i``'s prompt is a first word and a window of that run at its own offset, so it is one
string slice on the hot path, exactly ``n`` tokens, and distinct from every other prompt (two
windows match only if ``n`` random words all do). Memory: one block at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import numpy as np

from loadtest.workload.tokens import TokenizerError, count_many, vocab_words

__all__ = ["BLOCK", "SyntheticPool", "WordSet", "local_words", "probe_words", "server_words", "synthetic_words_text"]

BLOCK = 4096  # prompts per block of the run of words
_CANDIDATES = 8192  # the commonest vocabulary words checked: plenty for random text


@dataclass(frozen=True)
class WordSet:
    first: tuple[str, ...]  # one token as the first word of a text
    run: tuple[str, ...]  # one token after a space, anywhere inside a text


class _Counter(Protocol):
    def __call__(self, texts: list[str]) -> list[int]: ...


def _exact_run(count: _Counter, anchor: str, words: list[str]) -> list[str]:
    """``words`` minus any that change length inside a run (not expected: a last check, by halves)."""
    if not words or count([anchor + "".join(" " + w for w in words)])[0] == 1 + len(words):
        return words
    if len(words) == 1:
        return []
    half = len(words) // 2
    return _exact_run(count, anchor, words[:half]) + _exact_run(count, anchor, words[half:])


@cache
def local_words(name: str) -> WordSet:
    """The words of a local tokenizer (tiktoken or a tokenizer.json): every candidate checked alone and doubled."""
    candidates = vocab_words(name)[:_CANDIDATES]
    alone = count_many(candidates, name)
    doubled = count_many([f"{w} {w}" for w in candidates], name)
    first = [w for w, a, d in zip(candidates, alone, doubled, strict=True) if a == 1 and d == 2]
    run = [w for w, a, d in zip(candidates, alone, doubled, strict=True) if a >= 1 and d - a == 1]
    if first:
        run = _exact_run(lambda texts: count_many(texts, name), first[0], run)
    if not first or len(run) < 16:
        raise TokenizerError(f"target.tokenizer: {name}: too few one-token words to build synthetic prompts")
    return WordSet(tuple(first), tuple(run))


def probe_words(
    count: Callable[[str], int], candidates: Sequence[str], *, group: int = 32, budget: int = 200, want: int = 1024
) -> WordSet:
    """Words a remote tokenizer counts as one token each, from ``candidates`` (commonest first).

    A group is sent doubled (``a b c a b c``): ``2 * len`` tokens means each word is one token
    inside a run and the group's head also as a first word. A group that fails is split in two;
    at most ``budget`` counts are asked for."""
    first: list[str] = []
    run: list[str] = []
    queue = [list(candidates[i : i + group]) for i in range(0, len(candidates), group)]
    calls = 0
    while queue and calls < budget and len(run) < want:
        words = queue.pop(0)
        calls += 1
        if count(" ".join(words + words)) == 2 * len(words):
            first.append(words[0])
            run.extend(words)
        elif len(words) > 1:
            queue[:0] = [words[: len(words) // 2], words[len(words) // 2 :]]
    return WordSet(tuple(first), tuple(run))


def server_words(count: Callable[[str], int]) -> WordSet:
    """Words for ``target.tokenizer: server``: o200k_base's commonest one-token words, kept where the
    endpoint counts them as one token too."""
    o200k = local_words("o200k_base")
    firsts = set(o200k.first)
    words = probe_words(count, [w for w in o200k.run if w in firsts][:1024])
    if not words.first or len(words.run) < 16:
        raise TokenizerError("target.tokenizer: server: too few words are one token to the endpoint's tokenizer")
    return words


def synthetic_words_text(n_tokens: int, rng: np.random.Generator, words: WordSet) -> str:
    """``n_tokens`` random words: a first word, then ``n_tokens - 1`` after spaces."""
    head = words.first[int(rng.integers(0, len(words.first)))]
    return head + "".join(" " + words.run[i] for i in rng.integers(0, len(words.run), size=n_tokens - 1))


class SyntheticPool:
    """Request ``i``'s prompt for any ``i >= 0`` (``pool[i]``); deterministic for a seed.

    ``make(text, n)`` turns a prompt text of ``n`` tokens into the request's prompt item."""

    def __init__(
        self, mean: int, stddev: float, seed: int, words: WordSet, make: Callable[[str, int], Any], block: int = BLOCK
    ) -> None:
        self.mean, self.stddev, self.seed, self.words, self.make, self.block = mean, stddev, seed, words, make, block
        self._spaced = np.array([" " + w for w in words.run], dtype=object)
        self._sizes = np.array([len(w) + 1 for w in words.run], dtype=np.int64)
        self._index = -1
        self._load(0)

    def _load(self, index: int) -> None:
        """Block ``index``: each prompt's length and first word, and the run of words they are cut from."""
        rng = np.random.default_rng([self.seed, index])
        lengths = np.rint(rng.normal(self.mean, self.stddev, size=self.block)).astype(np.int64)
        self._lengths = np.clip(lengths, 1, None)
        self._heads = rng.integers(0, len(self.words.first), size=self.block)
        picks = rng.integers(0, len(self._spaced), size=self.block + int(self._lengths.max()))
        self._text = "".join(self._spaced[picks].tolist())
        self._offsets = np.concatenate(([0], np.cumsum(self._sizes[picks])))
        self._index = index

    def text(self, i: int) -> tuple[str, int]:
        """Prompt ``i``'s text and its length in tokens."""
        index, j = divmod(i, self.block)
        if index != self._index:
            self._load(index)
        n = int(self._lengths[j])
        start, end = int(self._offsets[j]), int(self._offsets[j + n - 1])
        return self.words.first[int(self._heads[j])] + self._text[start:end], n

    def __getitem__(self, i: int) -> Any:
        return self.make(*self.text(i))
