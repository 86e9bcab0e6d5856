"""Conversations and datasets in a scenario: ``workload.sessions`` and ``workload.prompt.dataset``.

``sessions``: N simulated users (``load.concurrency``) or session starts per second (``load.rate``),
each running a conversation of several turns whose context grows by every answer the server gave
(vLLM's multi-turn benchmark, AIPerf, GuideLLM). ``dataset``: ShareGPT JSON, OpenAI chat JSONL or
plain JSONL prompts from a local file, filtered by length (vLLM's ``bench serve`` defaults) and
sampled with the workload's seed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DatasetPrompt", "DatasetSpec", "Sessions", "ThinkTime", "TurnCount"]

PositiveInt = Annotated[int, Field(ge=1)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TurnCount(_Strict):
    """Turns per conversation drawn from a normal distribution, rounded and clipped to [min, max]
    (AIPerf's ``--conversation-turn-mean/-stddev``); one draw per conversation, seeded."""

    mean: Annotated[float, Field(ge=1)]
    stddev: NonNegFloat = 0.0
    min: PositiveInt = 1
    max: PositiveInt | None = None

    @model_validator(mode="after")
    def _ordered(self) -> TurnCount:
        if self.max is not None and self.max < self.min:
            raise ValueError("max must be at least min")
        return self


class ThinkTime(_Strict):
    """The user's pause between an answer and the next message: ``constant`` (every pause is
    ``mean``) or ``exponential`` (a memoryless user, mean ``mean``); seeded per conversation."""

    mean: NonNegFloat
    dist: Literal["constant", "exponential"] = "constant"


class Sessions(_Strict):
    """Conversations (``workload.sessions``). With ``load.concurrency`` each unit of concurrency is a
    user running conversations one after another; with ``load.rate`` conversations start at that
    rate. A step's ``requests`` (and ``warmup_requests``) count conversations, not turns."""

    # turns per conversation: a number, or a distribution; a dataset's conversations keep their own
    # turns (at most this many when given)
    turns: PositiveInt | TurnCount | None = None
    # synthetic prompts: the new user message of turn 1, 2, ... in tokens (the last repeats);
    # default: workload.prompt.synthetic's input_tokens (and stddev) for every turn
    input_tokens: list[PositiveInt] | None = None
    # each turn's max_tokens (the last repeats); default: workload.max_tokens (a dataset: its answers)
    max_tokens: list[PositiveInt] | None = None
    think_time_s: NonNegFloat | ThinkTime = 0.0
    # the conversation's id goes in these request headers (routers that keep a session on one replica:
    # x-session-id in vLLM's multi-turn benchmark; production-stack's x-user-id; SGLang's X-SMG-Routing-Key)
    header: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")]] = Field(default_factory=lambda: ["x-session-id"])
    # the answers a later turn's history carries: server (what the server answered: vLLM's multi-turn
    # benchmark, AIPerf, GuideLLM) or dataset (the dataset's recorded answers: the same bytes every run,
    # AIPerf's deltas_with_responses)
    history: Literal["server", "dataset"] = "server"
    # a conversation whose next prompt (every message so far and the new one, by target.tokenizer)
    # would exceed this ends there, counted completed_by_context; its first turn is always sent
    max_context_tokens: PositiveInt | None = None

    @field_validator("header", mode="before")
    @classmethod
    def _one_name(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("input_tokens", "max_tokens")
    @classmethod
    def _not_empty(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and not v:
            raise ValueError("give at least one value (one per turn, the last repeats)")
        return v

    @property
    def think(self) -> ThinkTime:
        t = self.think_time_s
        return t if isinstance(t, ThinkTime) else ThinkTime(mean=t)


class DatasetSpec(_Strict):
    """A local dataset file. Lengths are counted by ``target.tokenizer``; a row is kept when its
    exchanges pass every filter (vLLM's ``is_valid_sequence`` defaults)."""

    path: Annotated[str, Field(min_length=1)]
    # auto: each row by its keys; sharegpt: {"conversations": [{"from", "value"}]} (a JSON array or JSONL);
    # openai: {"messages": [{"role", "content"}]}; prompts: {"prompt": str, "max_tokens"?: int}
    format: Literal["auto", "sharegpt", "openai", "prompts"] = "auto"
    min_input_tokens: Annotated[int, Field(ge=0)] = 4
    max_input_tokens: PositiveInt | None = 1024
    max_total_tokens: PositiveInt | None = 2048
    min_output_tokens: Annotated[int, Field(ge=0)] = 4  # not checked when output_tokens is a number
    output_tokens: Literal["dataset"] | PositiveInt = "dataset"  # dataset: the answer's tokens (max_tokens)
    rows: PositiveInt | None = None  # sample this many of the kept rows (seeded, no repeats); None: all
    shuffle: bool = True  # seeded by workload.seed; false keeps the file's order


class DatasetPrompt(_Strict):
    dataset: DatasetSpec
