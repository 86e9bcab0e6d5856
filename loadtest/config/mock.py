"""How the built-in mock server behaves: one model for the scenario's ``target.mock``, the
``loadtest mock`` command's options and the server itself."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loadtest.config.faults import FAULTS

__all__ = ["FaultKind", "MockSettings", "MockStartError", "PrefixCacheSettings", "TokenizeMode"]


class MockStartError(RuntimeError):
    """The mock could not start (port in use, a bad option, ...). The message is one line. Here,
    not in mock/: the CLI catches it without importing the server."""


PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


TokenizeMode = Literal["all", "vllm", "llama-server", "llama-cpp-python", "none"]  # tokenize routes served
FaultKind = Literal[FAULTS]  # type: ignore[valid-type] - one list of kinds, in faults.py


class PrefixCacheSettings(BaseModel):
    """A prefix cache like vLLM's: full blocks of ``block_tokens`` keyed by their chain of hashes, LRU
    within ``capacity_tokens``; TTFT grows by ``prefill_ms_per_1k`` per 1,000 prompt tokens not cached."""

    model_config = ConfigDict(extra="forbid")

    block_tokens: Annotated[int, Field(ge=1)] = 16  # vLLM's default block size on GPUs
    capacity_tokens: Annotated[int, Field(ge=1)] = 262_144  # a single GPU's KV cache, roughly
    prefill_ms_per_1k: NonNegFloat = 20.0  # prefill time of 1,000 uncached prompt tokens


class MockSettings(BaseModel):
    """How the built-in mock server behaves (``target.mock`` when ``target.base_url`` is ``mock``)."""

    model_config = ConfigDict(extra="forbid")

    ttft_ms: NonNegFloat = 20.0
    itl_ms: NonNegFloat = 5.0
    jitter_ms: NonNegFloat = 0.0
    output_tokens: Annotated[int, Field(ge=1)] = 64
    capacity_tok_s: PositiveFloat | None = None
    usage: bool = True
    seed: int = 0
    faults: dict[FaultKind, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    stall_s: NonNegFloat = 2.0
    slow_first_byte_s: NonNegFloat = 2.0
    rpm: PositiveFloat | None = None  # rate limits: requests/tokens per minute/day (429 beyond them)
    tpm: PositiveFloat | None = None
    rpd: PositiveFloat | None = None
    tpd: PositiveFloat | None = None
    # seconds of its rate a bucket holds; None: the whole period (a minute's allowance, as OpenAI documents)
    burst_s: PositiveFloat | None = None
    ratelimit_headers: Literal["openai", "cerebras", "none"] = "openai"  # none: 429s with retry-after only
    ratelimit_minute_s: PositiveFloat = 60.0  # how long the limiter's minute lasts (tests compress time)
    reasoning_tokens: Annotated[int, Field(ge=0)] = 0  # streamed as reasoning_content before the answer
    tokens_per_chunk: Annotated[int, Field(ge=1)] = 1  # tokens in one streamed chunk
    reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content"  # reasoning: vLLM >= 0.11
    tokenizer: Annotated[str, Field(min_length=1)] | None = None  # a tokenizer.json: the mock's words and counts
    # An auth check as Azure OpenAI and gateways do: this header must carry the value of the variable
    # named by api_key_env (authorization: "Bearer <value>"), else 401. The value never enters the scenario.
    api_key_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")] | None = None
    api_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    tls_cert: str | None = None  # PEM certificate (with its key, or the key in tls_key): serve https
    tls_key: str | None = None
    tls_client_ca: str | None = None  # require client certificates signed by this CA (mutual TLS)
    tokenize: TokenizeMode = "all"
    # at most this many requests generate at once; the rest wait in line (a server's full batch), their
    # TTFT growing by the wait. None: every request generates at once
    slots: Annotated[int, Field(ge=1)] | None = None
    request_log: Annotated[int, Field(ge=0)] = 0  # the last N requests GET /mock/requests returns (0: none kept)
    # GET /metrics: Prometheus text with vLLM's names (mock/metrics.py); none: 404, as SGLang without
    # --enable-metrics (a server without metrics)
    metrics: Literal["vllm", "none"] = "vllm"
    prefix_cache: PrefixCacheSettings | None = None  # off: TTFT does not depend on the prompt
    # /v1/responses: reasoning as summary deltas (OpenAI asked for a summary, SGLang), raw reasoning_text
    # deltas (vLLM, llama.cpp), or hidden (OpenAI without a summary: an item, no deltas, only usage)
    responses_reasoning: Literal["summary", "text", "hidden"] = "summary"
    # /v1/embeddings: the answer takes ttft_ms plus this much per 1,000 input tokens
    embed_ms_per_1k_tokens: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _key_header_with_its_variable(self) -> MockSettings:
        if (self.api_key_header is None) != (self.api_key_env is None):
            raise ValueError("give api_key_header and api_key_env (the NAME of the variable holding the key) together")
        return self

    def unset_key_env(self) -> str | None:
        """The variable ``api_key_env`` names when it is not set in this process (None: set, or no key);
        its value is never read here. The mock would answer every request 401 without it."""
        return self.api_key_env if self.api_key_env is not None and not os.environ.get(self.api_key_env) else None
