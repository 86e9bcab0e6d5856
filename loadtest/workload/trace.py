"""Trace replay: a timestamped JSONL sent at its recorded times, its prompts rebuilt from the rows.

Formats (one JSON object a line):
- Mooncake (kvcache-ai/Mooncake FAST25 traces; AIPerf, SGLang and GuideLLM read it too):
  ``{"timestamp": ms, "input_length": n, "output_length": m, "hash_ids": [...]}``. Each hash id stands
  for a block of ``block_tokens`` (512) prompt tokens; equal ids are equal blocks (reusable KV cache),
  the last block holds the rest (``n - (k-1)*block``), so ``len(hash_ids) == ceil(n / block)`` (checked,
  as GuideLLM does). Block text is a run of one-token words drawn from ``(run nonce, hash id)``: requests
  that shared blocks in the trace share exactly those prefixes in the replay, and a run with a new
  nonce shares nothing with the last one. ``output_length`` becomes ``max_tokens``.
- Plain: ``{"timestamp": t, "prompt": str}`` or ``{"timestamp": t, "messages": [...]}``, optional ``max_tokens``.

Timestamps are relative to the first row (sorted, stable), in ``time_unit``; a step at ``speedup`` x
sends row i at ``(t_i - t_0) / speedup``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.config.scenario import ScenarioError
from loadtest.config.traffic import Trace
from loadtest.workload.files import read_lines
from loadtest.workload.synthetic import WordSet

__all__ = ["TracePool", "TraceRow", "read_trace"]


@dataclass(frozen=True, slots=True)
class TraceRow:
    t_s: float  # seconds after the trace's first row
    input_length: int | None = None  # Mooncake
    output_length: int | None = None
    hash_ids: tuple[int, ...] = ()
    prompt: str | None = None  # plain
    messages: list[dict[str, Any]] | None = None
    max_tokens: int | None = None


def _int(row: dict[str, Any], key: str, where: str, minimum: int) -> int:
    v = row.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ScenarioError(f"{where}: {key}: expected an integer >= {minimum}, got {v!r}")
    return v


def _mooncake(row: dict[str, Any], t: float, where: str, block: int) -> TraceRow:
    n = _int(row, "input_length", where, 1)
    ids = row.get("hash_ids")
    if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in ids):
        raise ScenarioError(f"{where}: hash_ids: expected a list of integers >= 0")
    if len(ids) != math.ceil(n / block):
        raise ScenarioError(
            f"{where}: hash_ids: {len(ids)} blocks for input_length {n}, expected ceil({n}/{block}) = "
            f"{math.ceil(n / block)} (load.trace.block_tokens)"
        )
    return TraceRow(t, n, _int(row, "output_length", where, 1), tuple(ids))


def _plain(row: dict[str, Any], t: float, where: str) -> TraceRow:
    prompt, messages = row.get("prompt"), row.get("messages")
    ok_messages = isinstance(messages, list) and all(isinstance(m, dict) and "content" in m for m in messages)
    if not isinstance(prompt, str) and not ok_messages:
        raise ScenarioError(f'{where}: expected "prompt" (a string) or "messages" (a list of {{role, content}})')
    mt = _int(row, "max_tokens", where, 1) if "max_tokens" in row else None
    return TraceRow(t, prompt=prompt if isinstance(prompt, str) else None, messages=messages, max_tokens=mt)


def read_trace(trace: Trace) -> list[TraceRow]:
    """The rows of ``trace.path``, sorted by time, times in seconds from the first row."""
    path = Path(trace.path)
    lines = read_lines(path, "load.trace.path")
    scale = 1e-3 if trace.time_unit == "ms" else 1.0
    fmt, rows = trace.format, []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ScenarioError(f"{where}: not valid JSON") from None
        if not isinstance(row, dict):
            raise ScenarioError(f"{where}: expected a JSON object")
        if fmt == "auto":
            fmt = "mooncake" if "hash_ids" in row else "plain"
        t = row.get("timestamp")
        if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
            raise ScenarioError(f"{where}: timestamp: expected a number >= 0, got {t!r}")
        r = _mooncake(row, t * scale, where, trace.block_tokens) if fmt == "mooncake" else _plain(row, t * scale, where)
        rows.append(r)
    if not rows:
        raise ScenarioError(f"load.trace.path: {path}: no rows in file")
    rows.sort(key=lambda r: r.t_s)
    t0 = rows[0].t_s
    return [TraceRow(r.t_s - t0, *[getattr(r, f) for f in TraceRow.__slots__[1:]]) for r in rows]


_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finalizer: a well-spread 64-bit hash of ``x``."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


class TracePool:
    """Request ``i`` gets row ``i % len(rows)``'s prompt (each step replays the trace from its first row);
    ``offsets_ns`` gives a step's due times. ``make(text, messages, max_tokens, n_tokens)`` builds an item.

    Block texts are windows of one long random run of words (drawn once from the run nonce), each hash
    id's window at an offset hashed from (nonce, id, step round): a string slice per block on the hot path.
    """

    RUN_WORDS = 1 << 20

    def __init__(
        self,
        rows: list[TraceRow],
        trace: Trace,
        words: WordSet,
        max_tokens: int,
        make: Callable[[str | None, list[dict[str, Any]] | None, int, int | None], Any],
    ) -> None:
        self.rows, self.trace, self.words, self.max_tokens, self.make = rows, trace, words, max_tokens, make
        self.nonce_int = int(trace.run_nonce, 16) if trace.run_nonce and trace.nonce == "run" else 0
        if any(r.hash_ids for r in rows):
            firsts = set(words.first)
            both = [w for w in words.run if w in firsts]  # a block may open the prompt: its words work first too
            spaced = np.array([" " + w for w in (both if len(both) >= 16 else words.run)], dtype=object)
            n = max(self.RUN_WORDS, 64 * trace.block_tokens)
            picks = np.random.default_rng([self.nonce_int, 5]).integers(0, len(spaced), size=n)
            self._text = "".join(spaced[picks].tolist())
            sizes = np.array([len(w) for w in spaced], dtype=np.int64)
            self._starts = np.concatenate(([0], np.cumsum(sizes[picks])))  # word k's first char (an array: no GC)
            self._room = n - trace.block_tokens
        # plain rows carry their text: built (and counted) once, up front
        self._plain = {
            j: make(r.prompt, r.messages, r.max_tokens or max_tokens, None)
            for j, r in enumerate(rows)
            if not r.hash_ids
        }

    def __len__(self) -> int:
        return len(self.rows)

    def _block(self, hash_id: int, round_: int, take: int) -> str:
        """The first ``take`` words of a hash id's block (each word after a space)."""
        k = _mix((hash_id * 0x9E3779B97F4A7C15 + round_ * 0xD1B54A32D192ED03 + self.nonce_int) & _MASK) % self._room
        return self._text[int(self._starts[k]) : int(self._starts[k + take])]

    def text(self, i: int) -> tuple[str, int]:
        """A Mooncake row's prompt text and its length in tokens (its input_length)."""
        round_, j = divmod(i, len(self.rows))
        row = self.rows[j]
        n, b = row.input_length or 0, self.trace.block_tokens
        round_ = round_ if self.nonce_int else 0  # a later step: new text, a cold cache again (nonce: run)
        text = "".join(self._block(h, round_, min(b, n - k * b)) for k, h in enumerate(row.hash_ids))
        return text[1:], n  # the first word's space dropped: it opens the prompt

    def offsets_ns(self, speedup: float, requests: int | None, duration_s: float | None) -> list[int]:
        """Due times of a step replaying the trace at ``speedup``: the first ``requests`` rows, or those
        due within ``duration_s``, or all of them."""
        offsets = [int(r.t_s / speedup * 1e9) for r in self.rows]
        if requests is not None:
            return offsets[:requests]
        if duration_s is not None:
            return [o for o in offsets if o < duration_s * 1e9]
        return offsets

    def __getitem__(self, i: int) -> Any:
        j = i % len(self.rows)
        if j in self._plain:
            return self._plain[j]
        text, n = self.text(i)
        return self.make(text, None, self.rows[j].output_length or self.max_tokens, n)
