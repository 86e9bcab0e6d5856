"""A record's token counts: from the server's usage, else the run's tokenizer (``target.tokenizer``),
or the endpoint's own tokenize route after the request (``server``), never inside its latency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loadtest.analysis.records import RequestRecord
from loadtest.transport.endpoint import Endpoint
from loadtest.transport.outputs import cached_tokens, set_reasoning
from loadtest.workload.prompts import PromptItem
from loadtest.workload.servertok import count_on_server
from loadtest.workload.tokens import count_tokens, token_source

__all__ = ["count_on_endpoint", "counts"]


def _set_tokens(
    rec: RequestRecord, usage: dict[str, Any] | None, item: PromptItem, text: Callable[[], str], encoding: str
) -> str | None:
    """Counts from the server's usage, else from the tokenizer; returns the output text when the
    endpoint itself is to count it (``target.tokenizer: server``)."""
    if usage and usage.get("completion_tokens") is not None:
        rec.tokens_source = "usage"
        rec.input_tokens = usage.get("prompt_tokens")
        rec.output_tokens = usage.get("completion_tokens")
        return None
    rec.tokens_source = token_source(encoding)
    if item.input_tokens is not None:
        rec.input_tokens = item.input_tokens
    elif item.messages is not None and rec.tokens_source != "server":
        rec.input_tokens = count_tokens("\n".join(str(m.get("content") or "") for m in item.messages), encoding)
    if rec.tokens_source == "server":
        return text()
    rec.output_tokens = count_tokens(text(), encoding)
    return None


def counts(
    rec: RequestRecord,
    usage: dict[str, Any] | None,
    item: PromptItem,
    text: Callable[[], str],
    reasoning: str,
    encoding: str,
) -> tuple[str, str] | None:
    """Output and reasoning tokens from usage or the local tokenizer; with ``target.tokenizer:
    server`` and no usage, the texts the endpoint is to count (after the request)."""
    output = _set_tokens(rec, usage, item, text, encoding)
    rec.cached_tokens = cached_tokens(usage)
    if output is not None:
        set_reasoning(rec, usage, "", encoding)  # from usage when given, else counted with the output
        return output, reasoning
    set_reasoning(rec, usage, reasoning, encoding)
    return None


async def count_on_endpoint(ep: Endpoint, rec: RequestRecord, text: str, reasoning: str) -> None:
    """The endpoint's count of the output (and of the reasoning, when usage did not give it); if its
    tokenize route fails, tiktoken's (and the record says so)."""
    base = str(ep.sdk.base_url)
    n = await count_on_server(ep.client, ep.headers, ep.timeout, base, text) if text else 0
    if n is None:
        rec.tokens_source, n = "tiktoken", count_tokens(text)
    rec.output_tokens = n
    if reasoning and not rec.reasoning_tokens:
        r = await count_on_server(ep.client, ep.headers, ep.timeout, base, reasoning)
        rec.reasoning_tokens = r if r is not None else count_tokens(reasoning)
