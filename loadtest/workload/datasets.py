"""Local dataset files as conversations: ShareGPT, OpenAI chat and plain prompts; length filters; seeded sampling.

Formats (``workload.prompt.dataset.format``; ``auto`` reads each row by its keys):

- ShareGPT: ``{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", ...}]}``, a JSON
  array (the published dumps) or one object a line. Speakers as vLLM's converter maps them:
  human/user -> user; gpt/chatgpt/bing/bard/assistant/model -> assistant; system -> system.
- OpenAI chat: ``{"messages": [{"role": "user", "content": "..."}, ...]}`` a line (content a string or
  a list of text parts).
- Plain prompts: ``{"prompt": "...", "max_tokens": N}`` a line (no answer: one turn each).

A row becomes a conversation: a leading system message, then exchanges (a user message and the
answer after it). Leading assistant messages are dropped; a row whose speakers do not alternate,
that names an unknown speaker, or that has no exchange is dropped and counted by reason. Filters
(vLLM ``is_valid_sequence``, named): a row is dropped when an exchange it contributes has fewer
than ``min_input_tokens`` input tokens (the new user message; the system message counts in the
first), fewer than ``min_output_tokens`` answer tokens (only when lengths come from the dataset),
more than ``max_input_tokens`` input tokens, or when all its exchanges' input and output tokens
add up to more than ``max_total_tokens``. Single requests use a row's first exchange (vLLM's
choice); conversations use every exchange (at most ``sessions.turns``). A structurally bad file
is a one-line ``ScenarioError`` naming the file, the line and the field.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.config.scenario import DatasetSpec, ScenarioError

__all__ = ["Conversation", "Dataset", "DatasetTurn", "Exchange", "load_dataset", "parse_rows"]

_SPEAKERS = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    "developer": "system",
}


@dataclass(frozen=True, slots=True)
class Exchange:
    """A user message and the answer recorded after it (None: the row ends with the user's message)."""

    user: str
    answer: str | None


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the file, parsed: what it says, before any length is counted. ``drop``: why it
    cannot be used (a speaker that is no role, speakers that do not alternate, no user message)."""

    line: int
    kind: str
    system: str | None
    exchanges: tuple[Exchange, ...]
    max_tokens: int | None = None  # a plain prompt's own answer limit
    drop: str | None = None


@dataclass(frozen=True, slots=True)
class DatasetTurn:
    """A turn to send: the user's message, its length in tokens, and the answer's limit; with
    ``answers``, the answer the dataset recorded after it and its tokens (None: none recorded)."""

    user: str
    tokens: int
    max_tokens: int
    answer: str | None = None
    answer_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Conversation:
    line: int  # where the row starts in the file
    system: str | None
    system_tokens: int
    turns: tuple[DatasetTurn, ...]


@dataclass(frozen=True)
class Dataset:
    """The kept rows, in the order they are sent, and what became of the others (summary.json)."""

    path: str
    format: str
    sha256: str
    rows: int
    dropped: dict[str, int]
    kept: int
    conversations: list[Conversation]
    shuffled: bool

    def info(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "sha256": self.sha256,
            "rows": self.rows,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "used": len(self.conversations),
            "shuffled": self.shuffled,
        }


def _objects(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) of each row: the elements of a JSON array, or one object a line."""
    if text.lstrip().startswith("["):
        yield from _array(path, text)
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ScenarioError(f"{path}: line {n}: not valid JSON ({e.msg})") from None


def _array(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """The elements of a JSON array one by one, each with the line it starts on."""
    decoder = json.JSONDecoder()
    counted, line = 0, 1  # newlines before text[counted] are counted in line

    def at(p: int) -> tuple[int, int]:
        """Past any whitespace from p: (position, its line)."""
        nonlocal counted, line
        while p < len(text) and text[p] in " \t\r\n":
            p += 1
        line, counted = line + text.count("\n", counted, p), p
        return p, line

    pos, _ = at(text.index("[") + 1)
    if text.startswith("]", pos):
        return
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise ScenarioError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        yield line, obj
        pos, n = at(end)
        if text.startswith("]", pos):
            return
        if not text.startswith(",", pos):
            raise ScenarioError(f"{path}: line {n}: not valid JSON (expected ',' or ']' after a row)")
        pos, _ = at(pos + 1)


def _kind(obj: Any, fmt: str, where: str) -> str:
    if not isinstance(obj, dict):
        raise ScenarioError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    keys = {"sharegpt": "conversations", "openai": "messages", "prompts": "prompt"}
    if fmt != "auto":
        if keys[fmt] not in obj:
            raise ScenarioError(f"{where}: {keys[fmt]}: missing (format {fmt})")
        return fmt
    for kind, key in keys.items():
        if key in obj:
            return kind
    raise ScenarioError(f'{where}: expected "conversations" (ShareGPT), "messages" (OpenAI chat) or "prompt"')


def _text(value: Any, where: str) -> str:
    """A message's text: a string, or an OpenAI list of text parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    raise ScenarioError(f"{where}: expected a string (or a list of text parts)")


def _messages(obj: dict[str, Any], kind: str, where: str) -> list[tuple[str | None, str]]:
    """(role, text) of every message of a ShareGPT or OpenAI row; role None for an unknown speaker."""
    key, who, what = ("conversations", "from", "value") if kind == "sharegpt" else ("messages", "role", "content")
    items = obj[key]
    if not isinstance(items, list):
        raise ScenarioError(f"{where}: {key}: expected a list")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise ScenarioError(f"{where}: {key}[{i}]: expected an object with {who!r} and {what!r}")
        speaker = m.get(who)
        if not isinstance(speaker, str):
            raise ScenarioError(f"{where}: {key}[{i}].{who}: expected a string")
        out.append((_SPEAKERS.get(speaker.lower()), _text(m.get(what), f"{where}: {key}[{i}].{what}")))
    return out


def _exchanges(messages: list[tuple[str | None, str]]) -> tuple[str | None, tuple[Exchange, ...], str | None]:
    """(system text, exchanges, why the row cannot be used) of a row's messages."""
    if any(role is None for role, _ in messages):
        return None, (), "unknown_speaker"
    lead = next((i for i, (role, _) in enumerate(messages) if role != "system"), len(messages))
    system = [text for _, text in messages[:lead]]
    rest = messages[lead:]
    if any(role == "system" for role, _ in rest):
        return None, (), "not_alternating"  # a system message between the turns
    while rest and rest[0][0] == "assistant":
        rest.pop(0)
    if any(role != ("user" if i % 2 == 0 else "assistant") for i, (role, _) in enumerate(rest)):
        return None, (), "not_alternating"
    pairs = tuple(Exchange(rest[i][1], rest[i + 1][1] if i + 1 < len(rest) else None) for i in range(0, len(rest), 2))
    return ("\n".join(system) if system else None), pairs, (None if pairs else "no_exchange")


def parse_rows(path: Path, text: str, fmt: str) -> list[Row]:
    """Every row of a dataset file; a structural problem is a ScenarioError naming the line and field."""
    rows = []
    for line, obj in _objects(path, text):
        where = f"{path}: line {line}"
        kind = _kind(obj, fmt, where)
        if kind == "prompts":
            mt = obj.get("max_tokens")
            if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
                raise ScenarioError(f"{where}: max_tokens: expected a positive integer, got {mt!r}")
            prompt = _text(obj.get("prompt"), f"{where}: prompt")
            rows.append(Row(line, kind, None, (Exchange(prompt, None),), max_tokens=mt))
            continue
        system, exchanges, drop = _exchanges(_messages(obj, kind, where))
        rows.append(Row(line, kind, system, exchanges, drop=drop))
    return rows


@dataclass(frozen=True)
class _Use:
    """How the run uses rows: how many exchanges, and where answer lengths come from."""

    spec: DatasetSpec
    turns: int  # exchanges used per row at most (1: single requests)
    max_tokens: int  # a plain prompt's answer limit when its row gives none
    count: Callable[[str], int]
    answers: bool = False  # keep each exchange's recorded answer (sessions.history: dataset)


def _conversation(row: Row, use: _Use) -> Conversation | str:
    """The row as turns to send, or why the filters drop it."""
    spec, count = use.spec, use.count
    from_data = spec.output_tokens == "dataset" and row.kind != "prompts"
    exchanges = row.exchanges[: use.turns]
    if from_data and exchanges and exchanges[-1].answer is None:
        exchanges = exchanges[:-1]  # the row's last message, unanswered: no answer length to take
    if not exchanges:
        return "no_answer"
    system_tokens = count(row.system) if row.system else 0
    turns, total = [], 0
    for i, ex in enumerate(exchanges):
        user_tokens = count(ex.user)
        n_in = user_tokens + (system_tokens if i == 0 else 0)
        if from_data:
            n_out = count(ex.answer or "")
        else:
            n_out = spec.output_tokens if isinstance(spec.output_tokens, int) else (row.max_tokens or use.max_tokens)
        if n_in < spec.min_input_tokens:
            return "input_too_short"
        if from_data and n_out < spec.min_output_tokens:
            return "output_too_short"
        if spec.max_input_tokens is not None and n_in > spec.max_input_tokens:
            return "input_too_long"
        total += n_in + n_out
        if use.answers and ex.answer is not None:
            recorded = n_out if from_data else count(ex.answer)
            turns.append(DatasetTurn(ex.user, user_tokens, max(1, n_out), ex.answer, recorded))
        else:
            turns.append(DatasetTurn(ex.user, user_tokens, max(1, n_out)))
    if spec.max_total_tokens is not None and total > spec.max_total_tokens:
        return "total_too_long"
    return Conversation(row.line, row.system, system_tokens, tuple(turns))


def _read(path: Path) -> tuple[str, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"workload.prompt.dataset.path: {path}: file not found") from None
    except OSError as e:
        raise ScenarioError(f"workload.prompt.dataset.path: {path}: cannot read ({e.__class__.__name__})") from None
    try:
        return data.decode("utf-8-sig"), hashlib.sha256(data).hexdigest()
    except UnicodeDecodeError:
        raise ScenarioError(f"workload.prompt.dataset.path: {path}: not UTF-8 text") from None


def load_dataset(
    spec: DatasetSpec,
    *,
    seed: int,
    turns: int,
    max_tokens: int,
    count: Callable[[str], int],
    answers: bool = False,
) -> Dataset:
    """The rows of ``spec.path`` a run sends, filtered, shuffled with ``seed`` and sampled (``spec.rows``).
    ``turns``: exchanges used per row (1 for single requests); ``max_tokens``: a plain prompt's answer
    limit when its row has none; ``count``: tokens of a text under ``target.tokenizer``; ``answers``:
    keep the recorded answers (and their tokens) in the turns."""
    path = Path(spec.path)
    text, digest = _read(path)
    rows = parse_rows(path, text, spec.format)
    if not rows:
        raise ScenarioError(f"workload.prompt.dataset: {path}: no rows in the file")
    use = _Use(spec, turns, max_tokens, count, answers)
    dropped: Counter[str] = Counter()
    kept: list[Conversation] = []
    for row in rows:
        conv = row.drop if row.drop is not None else _conversation(row, use)
        if isinstance(conv, str):
            dropped[conv] += 1
        else:
            kept.append(conv)
    if not kept:
        raise ScenarioError(f"workload.prompt.dataset: {path}: no row passes the filters ({_reasons(dropped)})")
    order = np.random.default_rng(seed).permutation(len(kept)).tolist() if spec.shuffle else range(len(kept))
    chosen = [kept[i] for i in order]
    if spec.rows is not None:
        if spec.rows > len(kept):
            raise ScenarioError(
                f"workload.prompt.dataset.rows: {spec.rows} asked for, but only {len(kept)} of the {len(rows)} "
                f"rows of {path} pass the filters ({_reasons(dropped)})"
            )
        chosen = chosen[: spec.rows]
    kinds = sorted({r.kind for r in rows})
    return Dataset(str(path), "+".join(kinds), digest, len(rows), dict(dropped), len(kept), chosen, spec.shuffle)


def _reasons(dropped: Counter[str]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items())) or "none dropped"
