"""Conversations (``workload.sessions``): what each turn says, and the history it is sent with.

Conversation ``s`` is planned from ``s`` and the seed alone, so a run is reproducible whatever order
its conversations run in: its number of turns (fixed, or a seeded draw), its user messages
(synthetic: random words of exactly the configured tokens, never repeated; a dataset: a row's user
messages in order), each turn's ``max_tokens`` and the user's think time after each answer
(constant or exponential). ``History`` then builds each turn's request: every earlier message,
the answers being the server's own text (as vLLM's multi-turn benchmark and AIPerf send them) or,
with ``history: dataset``, the dataset's recorded answers (the same bytes every run), then the new
user message, so the context grows turn by turn. With ``max_context_tokens`` a conversation ends
where its next prompt would hold more tokens than that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from loadtest.config.scenario import DatasetPrompt, Sessions, SyntheticPrompt, SyntheticSpec, Workload
from loadtest.workload.datasets import Conversation, Dataset, DatasetTurn, load_dataset
from loadtest.workload.prompts import PromptItem
from loadtest.workload.synthetic import WordSet, synthetic_words_text
from loadtest.workload.tokens import TokenizerError

__all__ = ["History", "SessionPlan", "SessionPool", "session_id", "session_pool"]

_SALT = 0x5E55  # keeps a conversation's draws apart from the synthetic single prompts of the same seed


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """One conversation: its turns and the think time before each turn after the first."""

    number: int
    system: str | None
    system_tokens: int
    turns: tuple[DatasetTurn, ...]
    think_s: tuple[float, ...]  # think_s[t - 1]: the pause before turn t + 1 (after answer t)


def session_id(run_tag: int, number: int) -> str:
    """The value of the session header: the run's tag and the conversation's number (unique in a run)."""
    return f"loadtest-{run_tag & 0xFFFFFFFF:08x}-{number}"


class SessionPool:
    """Conversation ``s`` for any ``s >= 0`` (``pool.session(s)``), from synthetic words or a dataset.
    ``pool[i]`` is conversation i's first turn (the prompt-pool view)."""

    def __init__(
        self,
        spec: Sessions,
        seed: int,
        api: Literal["chat", "completions"],
        *,
        system: str | None,
        count: Callable[[str], int],
        synthetic: tuple[SyntheticSpec, WordSet, int] | None = None,
        dataset: Dataset | None = None,
        local: bool = True,
    ) -> None:
        """``synthetic``: (the user messages' spec, the words, the default max_tokens); else ``dataset``.
        ``local``: ``count`` is a local tokenizer (answers are counted with it; else the server's usage)."""
        self.spec, self.seed, self.api = spec, seed, api
        self.system = system
        self.system_tokens = count(system) if system else 0
        self.synthetic, self.dataset = synthetic, dataset
        self._count = count if local else None

    def history_answer(self, turn: DatasetTurn, text: str, reported: int) -> tuple[str, int]:
        """The answer a turn leaves in the history, and its tokens: the server's ``text`` (``reported``
        tokens by its usage), or with ``history: dataset`` the answer the dataset recorded for the turn."""
        if self.spec.history == "dataset" and turn.answer is not None:
            return turn.answer, turn.answer_tokens
        return text, self.answer_tokens(text, reported)

    def ends_by_context(self, history: History, following: DatasetTurn | None) -> bool:
        """The conversation ends here: its next prompt (the history and ``following``) would exceed
        ``max_context_tokens``."""
        limit = self.spec.max_context_tokens
        return limit is not None and following is not None and history.tokens + following.tokens > limit

    def answer_tokens(self, text: str, reported: int) -> int:
        """An answer's tokens in the history's count: by the local tokenizer that counted every other
        message, else (``target.tokenizer: server``, no call per turn) the server's own ``reported``."""
        return self._count(text) if self._count is not None else reported

    def session(self, number: int) -> SessionPlan:
        rng = np.random.default_rng([self.seed, _SALT, number])
        if self.dataset is not None:
            conv: Conversation = self.dataset.conversations[number % len(self.dataset.conversations)]
            system = conv.system if conv.system is not None else self.system
            sys_tokens = conv.system_tokens if conv.system is not None else self.system_tokens
            turns = conv.turns
        else:
            system, sys_tokens = self.system, self.system_tokens
            turns = self._synthetic_turns(self._turn_count(rng), rng)
        think = self.spec.think
        if think.dist == "exponential" and think.mean > 0:
            pauses = tuple(float(x) for x in rng.exponential(think.mean, size=max(0, len(turns) - 1)))
        else:
            pauses = (think.mean,) * max(0, len(turns) - 1)
        return SessionPlan(number, system, sys_tokens, turns, pauses)

    def _turn_count(self, rng: np.random.Generator) -> int:
        t = self.spec.turns
        if isinstance(t, int):
            return t
        assert t is not None  # the scenario model asks synthetic conversations for turns
        n = int(np.rint(rng.normal(t.mean, t.stddev))) if t.stddev > 0 else round(t.mean)
        return max(t.min, min(n, t.max)) if t.max is not None else max(t.min, n)

    def _synthetic_turns(self, n: int, rng: np.random.Generator) -> tuple[DatasetTurn, ...]:
        assert self.synthetic is not None
        prompt, words, default_max = self.synthetic
        sizes, limits = self.spec.input_tokens, self.spec.max_tokens
        turns = []
        for t in range(n):
            if sizes is not None:
                k = sizes[min(t, len(sizes) - 1)]
            elif prompt.stddev > 0:
                k = max(1, int(np.rint(rng.normal(prompt.input_tokens, prompt.stddev))))
            else:
                k = prompt.input_tokens
            limit = limits[min(t, len(limits) - 1)] if limits is not None else default_max
            turns.append(DatasetTurn(synthetic_words_text(k, rng, words), k, limit))
        return tuple(turns)

    def __getitem__(self, i: int) -> PromptItem:
        plan = self.session(i)
        return History(plan, self.api).ask(plan.turns[0])


class History:
    """The messages of one conversation so far; each turn's request carries all of them."""

    def __init__(self, plan: SessionPlan, api: Literal["chat", "completions"]) -> None:
        self.api = api
        self.messages: list[dict[str, Any]] = []
        self.tokens = plan.system_tokens  # the context so far, by the client's count
        if plan.system is not None:
            self.messages.append({"role": "system", "content": plan.system})

    def ask(self, turn: DatasetTurn) -> PromptItem:
        """The request of a turn: the history and the new user message (kept until the answer comes).
        ``input_tokens`` is the whole context: every message's tokens."""
        messages = [*self.messages, {"role": "user", "content": turn.user}]
        n = self.tokens + turn.tokens
        if self.api == "chat":
            return PromptItem(messages=messages, prompt=None, max_tokens=turn.max_tokens, input_tokens=n)
        text = "\n".join(str(m["content"]) for m in messages)
        return PromptItem(messages=None, prompt=text, max_tokens=turn.max_tokens, input_tokens=n)

    def answered(self, turn: DatasetTurn, answer: str, answer_tokens: int) -> None:
        """Turn done: its user message and the server's answer (``answer_tokens`` long) join the history."""
        self.messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": answer}]
        self.tokens += turn.tokens + answer_tokens


def session_pool(
    workload: Workload,
    api: Literal["chat", "completions"],
    count: Callable[[str], int],
    words: Callable[[], WordSet],
    *,
    local: bool = True,
) -> SessionPool:
    """The conversations of a run (or of one worker: its own seed), from synthetic words or a dataset.
    ``local``: ``count`` is a local tokenizer (not the endpoint's tokenize route)."""
    spec = workload.sessions
    assert spec is not None
    system = workload.system_prompt
    match workload.prompt:
        case SyntheticPrompt(synthetic=synthetic):
            made = (synthetic, words(), workload.max_tokens)
            pool = SessionPool(spec, workload.seed, api, system=system, count=count, synthetic=made, local=local)
            for turn in pool.session(0).turns[:4]:  # the words promise exact lengths: check with the tokenizer
                if count(turn.user) != turn.tokens:
                    raise TokenizerError(f"target.tokenizer: messages cannot be made of exactly {turn.tokens} tokens")
            return pool
        case DatasetPrompt(dataset=d):
            cap = spec.turns if isinstance(spec.turns, int) else 1 << 30
            data = load_dataset(
                d,
                seed=workload.seed,
                turns=cap,
                max_tokens=workload.max_tokens,
                count=count,
                answers=spec.history == "dataset",
            )
            return SessionPool(spec, workload.seed, api, system=system, count=count, dataset=data, local=local)
    raise AssertionError("unreachable: the scenario model allows synthetic or dataset prompts with sessions")
