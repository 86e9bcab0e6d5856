"""Tool calls a response made, and the turn that answers them (``workload.tool_result``).

The follow-up is the same conversation with the model's calls and one canned result per call
appended, in the shape of the API (chat: an assistant message with ``tool_calls`` and one ``role:
tool`` message per call; Responses: ``function_call`` and ``function_call_output`` input items, as
SGLang and vLLM map them one-to-one), so the model answers the results.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ToolCall", "follow_up"]


@dataclass(slots=True)
class ToolCall:
    """One call of a response: its id (chat ``tool_calls[].id``, Responses ``call_id``), function and
    arguments (JSON text, joined from the streamed pieces)."""

    id: str
    name: str
    arguments: str = ""


def _chat_turn(calls: list[ToolCall], result: str) -> list[dict[str, Any]]:
    asked = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ],
    }
    return [asked, *({"role": "tool", "tool_call_id": c.id, "content": result} for c in calls)]


def _responses_turn(calls: list[ToolCall], result: str) -> list[dict[str, Any]]:
    asked = [{"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments} for c in calls]
    return asked + [{"type": "function_call_output", "call_id": c.id, "output": result} for c in calls]


def follow_up(item: Any, api: str, calls: list[ToolCall], result: str) -> Any:
    """The prompt item of the turn that answers ``calls`` of the request made from ``item`` with
    ``result`` each (its images stay in the user message they were in)."""
    turn = _chat_turn(calls, result) if api == "chat" else _responses_turn(calls, result)
    return replace(item, messages=[*(item.messages or []), *turn], input_tokens=None)
