"""What a response carries, by kind: the answer (content, tool-call arguments) and the reasoning
before it, from streamed deltas and whole messages; and how many of the output tokens were reasoning.

Reasoning models stream ``reasoning_content`` (DeepSeek, SGLang, vLLM before 0.11) or ``reasoning``
(vLLM since 0.11) deltas before the ``content``; a tool call streams ``tool_calls[].function.arguments``
pieces. All of it is generated output: every piece is a chunk (its arrival a chunk time), and the
first content or arguments piece starts the answer (TTFA).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadtest.analysis.records import RequestRecord
from loadtest.workload.tokens import count_tokens
from loadtest.workload.tools import ToolCall

__all__ = [
    "Side",
    "cached_tokens",
    "delta_output",
    "message_content",
    "message_output",
    "reasoning_text",
    "set_reasoning",
    "tool_args",
    "track_calls",
]


@dataclass(slots=True)
class Side:
    """What a chat response carries besides its content: reasoning and tool-call arguments (joined,
    and each call's own in ``calls``, by its index, for a turn that answers them)."""

    reasoning: list[str]
    tool_args: list[str]
    calls: dict[Any, ToolCall] = field(default_factory=dict)

    def output(self, content: list[str]) -> str:
        """Every output text in the order a reasoning model writes it."""
        return "".join(self.reasoning) + "".join(content) + "".join(self.tool_args)


def reasoning_text(d: dict[str, Any]) -> str | None:
    """The reasoning text of a delta or message: ``reasoning_content`` (DeepSeek, SGLang, vLLM before
    0.11) or ``reasoning`` (vLLM since 0.11, OpenRouter)."""
    r = d.get("reasoning_content") or d.get("reasoning")
    return r if isinstance(r, str) else None


def tool_args(calls: Any) -> str:
    """The ``function.arguments`` pieces of a ``tool_calls`` list, joined."""
    if not isinstance(calls, list):
        return ""
    return "".join(a for c in calls if isinstance(a := ((c or {}).get("function") or {}).get("arguments"), str))


def track_calls(calls: dict[Any, ToolCall], pieces: Any) -> None:
    """Add a ``tool_calls`` list (streamed pieces or a whole message's) to ``calls``, by index: the first
    piece of a call carries its id and function name, every piece part of its arguments."""
    if not isinstance(pieces, list):
        return
    for c in pieces:
        if not isinstance(c, dict):
            continue
        fn = c.get("function") if isinstance(c.get("function"), dict) else {}
        key = c.get("index", len(calls) if c.get("id") else max(len(calls) - 1, 0))
        args = fn.get("arguments") if isinstance(fn.get("arguments"), str) else ""
        call = calls.get(key)
        if call is None:
            calls[key] = ToolCall(str(c.get("id") or f"call_{key}"), str(fn.get("name") or ""), args)
        else:
            call.name = call.name or str(fn.get("name") or "")
            call.arguments += args


def delta_output(delta: dict[str, Any], t: int, rec: RequestRecord, pieces: list[str], side: Side) -> bool:
    """Any streamed chat delta but a lone content piece after the answer began: keep its content,
    reasoning and tool-call arguments; the first content or arguments piece starts the answer (TTFA).
    True when the delta carries output (a chunk)."""
    content = delta.get("content")
    reasoning = reasoning_text(delta)
    args = tool_args(delta.get("tool_calls"))
    if content:
        pieces.append(content)
    if reasoning:
        side.reasoning.append(reasoning)
    if args:
        side.tool_args.append(args)
    if "tool_calls" in delta:
        track_calls(side.calls, delta["tool_calls"])
    if (content or args) and rec.first_answer_ns is None:
        rec.first_answer_ns = t
    return bool(content or reasoning or args)


def message_output(obj: dict[str, Any], chat: bool) -> tuple[str, str]:
    """(every output text, the reasoning part of it) of a non-streamed response."""
    choices = obj.get("choices")
    if not choices:
        return "", ""
    c = choices[0]
    if not chat:
        return c.get("text") or "", ""
    m = c.get("message") or {}
    reasoning = reasoning_text(m) or ""
    return reasoning + (m.get("content") or "") + tool_args(m.get("tool_calls")), reasoning


def message_content(obj: dict[str, Any], chat: bool) -> str:
    """The answer's text of a non-streamed response: the message's content (chat) or the text
    (completions); reasoning and tool calls left out."""
    choices = obj.get("choices")
    if not choices:
        return ""
    c = choices[0]
    if not chat:
        return c.get("text") or ""
    return (c.get("message") or {}).get("content") or ""


def set_reasoning(rec: RequestRecord, usage: dict[str, Any] | None, reasoning: str, encoding: str) -> None:
    """Reasoning tokens (part of the output tokens): ``usage.completion_tokens_details.reasoning_tokens``
    when the server gives it (OpenAI, vLLM with a reasoning parser, DeepSeek), else counted from the
    reasoning text by the tokenizer (0 without any)."""
    details = (usage or {}).get("completion_tokens_details")
    given = details.get("reasoning_tokens") if isinstance(details, dict) else None
    if isinstance(given, int):
        rec.reasoning_tokens = given
    else:
        rec.reasoning_tokens = count_tokens(reasoning, encoding) if reasoning else 0


def cached_tokens(usage: dict[str, Any] | None) -> int | None:
    """Prompt tokens the server's prefix cache held: ``usage.prompt_tokens_details.cached_tokens`` (OpenAI;
    vLLM with ``--enable-prompt-tokens-details``; SGLang with ``--enable-cache-report``); None when not given."""
    details = (usage or {}).get("prompt_tokens_details")
    n = details.get("cached_tokens") if isinstance(details, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None
