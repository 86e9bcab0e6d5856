"""An embeddings response (``POST /embeddings``) read into a record.

One whole JSON body: ``data`` (one embedding per input, a list of floats or base64 float32 text, as
``encoding_format`` asked) and ``usage.prompt_tokens``. Nothing is generated, so the record has no
token times, no output tokens and no TTFT: its latency is E2E. A response with another number of
embeddings than inputs is a bad response.
"""

from __future__ import annotations

from typing import Any

from loadtest.analysis.records import RequestRecord
from loadtest.workload.prompts import PromptItem
from loadtest.workload.tokens import token_source

__all__ = ["read_embeddings"]


def read_embeddings(obj: Any, rec: RequestRecord, item: PromptItem, encoding: str) -> None:
    """Inputs and input tokens: ``usage.prompt_tokens``, else the prompt's own count (the tokenizer's)."""
    n = len(item.inputs) if item.inputs is not None else 1
    rec.inputs = n
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list) or len(data) != n:
        got = len(data) if isinstance(data, list) else "no"
        raise ValueError(f"{got} embeddings for {n} inputs")
    usage = obj.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        rec.tokens_source, rec.input_tokens = "usage", usage["prompt_tokens"]
    else:
        rec.tokens_source, rec.input_tokens = token_source(encoding), item.input_tokens
