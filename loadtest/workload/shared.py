"""Shared-prefix prompts: G groups, each a prefix of P tokens, and a unique suffix of S tokens per request.

Request ``i``'s prompt is ``nonce + prefix[group_i] + " " + suffix_i`` in one-token words
(``synthetic.py``), so it is exactly ``P + S_i`` tokens under the run's tokenizer. The nonce is the
first ``NONCE_TOKENS`` words of the prefix: per run by default (``run``: a server's prefix cache never
carries over from one run to the next, vLLM#52884, GuideLLM #186), per request (``request``: nothing is
shared, every prefix cache misses), or none (byte-identical prompts run after run: a warm-cache A/B).

Groups are drawn per request, seeded: uniform, or Zipf (``p(k) ~ (k+1)^-alpha``, group 0 hottest, as
SGLang's ``--gsp-group-distribution zipf``). The prefixes come from ``seed`` (every worker of a run
shares them); the group draws, suffixes and request nonces from the worker's ``workload.seed``.
Like ``SyntheticPool``, draws are made a block of requests at a time, so the hot path slices strings.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import numpy as np

from loadtest.config.traffic import NONCE_TOKENS, SharedPrefixSpec
from loadtest.workload.synthetic import BLOCK, SyntheticPool, WordSet, synthetic_words_text

__all__ = ["SharedPrefixPool", "group_weights", "new_run_nonce"]


def new_run_nonce() -> str:
    """A fresh run nonce: 16 hex digits, the first a letter (YAML never reads it as a number)."""
    return "abcdef"[secrets.randbelow(6)] + secrets.token_hex(8)[1:]


def group_weights(spec: SharedPrefixSpec) -> np.ndarray:
    """The probability of each group: uniform, or Zipf with ``zipf_alpha`` (group 0 hottest)."""
    if spec.choice == "uniform":
        return np.full(spec.groups, 1.0 / spec.groups)
    w = np.arange(1, spec.groups + 1, dtype=float) ** -spec.zipf_alpha
    return w / w.sum()


class SharedPrefixPool:
    """Request ``i``'s prompt for any ``i >= 0``; deterministic for the spec and the seed.

    ``make(text, n_tokens, group)`` turns a prompt text into the request's prompt item."""

    def __init__(self, spec: SharedPrefixSpec, seed: int, words: WordSet, make: Callable[[str, int, int], Any]) -> None:
        self.spec, self.seed, self.words, self.make = spec, seed, words, make
        self.nonce_int = int(spec.run_nonce, 16) if spec.run_nonce else 0
        self.k = NONCE_TOKENS if spec.nonce != "none" else 0
        pseed = spec.seed if spec.seed is not None else seed
        body = spec.prefix_tokens - self.k  # the prefix after its nonce
        self.prefixes = [
            synthetic_words_text(body, np.random.default_rng([pseed, 7, g]), words) for g in range(spec.groups)
        ]
        run_nonce = synthetic_words_text(self.k, np.random.default_rng([self.nonce_int, 11]), words) if self.k else ""
        self.heads = [run_nonce + " " + p if self.k else p for p in self.prefixes]  # nonce: run or none
        self.weights = group_weights(spec)
        self.suffixes = SyntheticPool(spec.suffix_tokens, spec.suffix_stddev, seed, words, lambda t, n: (t, n))
        self._index = -1

    def _load(self, index: int) -> None:
        """Block ``index``'s group draws (the seed alone: every run draws the same groups) and, with
        ``nonce: request``, its nonces (the run nonce too: new every run)."""
        self._groups = np.random.default_rng([self.seed, index, 3]).choice(self.spec.groups, size=BLOCK, p=self.weights)
        if self.spec.nonce == "request":
            rng = np.random.default_rng([self.seed, self.nonce_int, index, 4])
            self._nonce_first = rng.integers(0, len(self.words.first), size=BLOCK)
            self._nonce_run = rng.integers(0, len(self.words.run), size=(BLOCK, self.k - 1))
        self._index = index

    def group(self, i: int) -> int:
        index, j = divmod(i, BLOCK)
        if index != self._index:
            self._load(index)
        return int(self._groups[j])

    def text(self, i: int) -> tuple[str, int, int]:
        """Prompt ``i``'s text, its length in tokens and its group."""
        g = self.group(i)
        suffix, n = self.suffixes.text(i)
        head = self.heads[g]
        if self.spec.nonce == "request":
            j = i % BLOCK
            w = self.words
            nonce = w.first[int(self._nonce_first[j])] + "".join(" " + w.run[int(x)] for x in self._nonce_run[j])
            head = nonce + " " + self.prefixes[g]
        return head + " " + suffix, self.spec.prefix_tokens + n, g

    def __getitem__(self, i: int) -> Any:
        return self.make(*self.text(i))
