"""Scenario models for real traffic shapes: shared-prefix prompts, trace replay, load ramps.

``workload.prompt.shared_prefix`` (SGLang's generated-shared-prefix, vLLM's prefix_repetition): G groups,
each a prefix of P tokens, and a unique suffix per request. ``load.trace``: a Mooncake or plain
timestamped JSONL replayed at its recorded times. ``load.ramp``: a rate (or concurrency) that rises
along a line. README "Traffic shapes" documents every field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

__all__ = ["NONCE_TOKENS", "Ramp", "SharedPrefixPrompt", "SharedPrefixSpec", "Trace"]

NONCE_TOKENS = 4  # words at the head of a prompt that carry its nonce (taken out of prefix_tokens)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SharedPrefixSpec(_Strict):
    groups: Annotated[int, Field(ge=1)] = 8
    prefix_tokens: Annotated[int, Field(ge=1)] = 1024  # shared by a group's requests (its nonce included)
    suffix_tokens: Annotated[int, Field(ge=1)] = 128  # unique to each request
    suffix_stddev: Annotated[float, Field(ge=0)] = 0.0
    choice: Literal["uniform", "zipf"] = "uniform"  # zipf: p(group k) ~ (k+1)^-zipf_alpha, group 0 hottest
    zipf_alpha: Annotated[float, Field(gt=0)] = 1.0
    # run: one nonce for the run heads every prefix (shared within the run, never across runs);
    # request: a nonce per request (nothing is shared: defeats prefix caches); none: byte-identical runs
    nonce: Literal["run", "request", "none"] = "run"
    run_nonce: Annotated[str, Field(pattern=r"^[0-9a-f]{1,32}$")] | None = None  # set by the run; give one to repeat
    seed: int | None = None  # of the prefixes; default workload.seed (the same for every worker of a run)

    @model_validator(mode="after")
    def _room_for_nonce(self) -> SharedPrefixSpec:
        if self.nonce != "none" and self.prefix_tokens <= NONCE_TOKENS:
            raise ValueError(f"prefix_tokens must exceed the {NONCE_TOKENS} nonce tokens at its head (or nonce: none)")
        return self


class SharedPrefixPrompt(_Strict):
    shared_prefix: SharedPrefixSpec


class Trace(_Strict):
    """A timestamped JSONL replayed at its recorded times: one open-loop step per ``speedup`` value."""

    path: Annotated[str, Field(min_length=1)]  # relative to the scenario file
    format: Literal["auto", "mooncake", "plain"] = "auto"  # mooncake: hash_ids; plain: prompt or messages
    speedup: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [1.0])  # 2: twice as fast
    time_unit: Literal["ms", "s"] = "ms"  # of timestamp (Mooncake: ms)
    block_tokens: Annotated[int, Field(ge=1)] = 512  # tokens a Mooncake hash id stands for
    nonce: Literal["run", "none"] = "run"  # run: block texts differ between runs (a cold server cache each run)
    run_nonce: Annotated[str, Field(pattern=r"^[0-9a-f]{1,32}$")] | None = None  # set by the run

    @field_validator("speedup", mode="before")
    @classmethod
    def _scalar_to_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, int | float) and not isinstance(v, bool) else v

    @field_validator("speedup")
    @classmethod
    def _some(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("needs at least one value")
        return v


class Ramp(_Strict):
    """A load that rises (or falls) along a line from ``from`` to ``to`` over ``over_s``, then holds ``to``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: Annotated[float, Field(ge=0, alias="from")]
    to: Annotated[float, Field(gt=0)]
    over_s: Annotated[float, Field(gt=0)]
    of: Literal["rate", "concurrency"] = "rate"  # rate: open loop (req/s); concurrency: closed loop (users)

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        d = handler(self)
        return {"from": d.pop("start"), **d}  # the resolved scenario reads back as the user wrote it
