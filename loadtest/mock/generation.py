"""What one mock response generates beyond one content token a chunk: reasoning before the answer,
a tool call as the answer, several tokens a chunk. Apart from server.py, whose plain path
(one content token a chunk) stays as fast as it was.

As real servers do (README, "The mock server"): reasoning models stream ``delta.reasoning_content``
(DeepSeek, SGLang, vLLM before 0.11; ``delta.reasoning`` on vLLM since) before ``delta.content``, and
count the reasoning in ``usage.completion_tokens`` with ``completion_tokens_details.reasoning_tokens``
beside it (OpenAI's usage object). A tool call streams ``delta.tool_calls``: the first piece carries
the call's id and function name, every piece ``function.arguments`` text (JSON once joined); the
response ends with ``finish_reason: tool_calls``. A chunk of several tokens is sent when its first
token is due (a decoding step that yields several tokens, as speculative decoding does), so chunks
come ``tokens_per_chunk x itl`` apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Generation", "tool_name"]

_COMPACT = (",", ":")


def _answers_calls(body: dict[str, Any]) -> bool:
    """The prompt ends with tool results (chat: a ``role: tool`` message; Responses: a
    ``function_call_output`` item): the model answers them."""
    items = body.get("messages") if "messages" in body else body.get("input")
    last = items[-1] if isinstance(items, list) and items else None
    return isinstance(last, dict) and (last.get("role") == "tool" or last.get("type") == "function_call_output")


def tool_name(body: dict[str, Any]) -> str | None:
    """The function a request with ``tools`` gets called (None: answer with content): the one
    ``tool_choice`` names, else the first. Tools and a named choice may be nested (chat: ``{type,
    function: {name}}``) or flat (Responses: ``{type, name}``). After tool results the answer is
    text, unless ``tool_choice`` forces a call (``required`` or a name)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        named = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        if isinstance(named.get("name"), str) and named["name"]:
            return str(named["name"])
    elif choice != "required" and _answers_calls(body):
        return None
    first = tools[0] if isinstance(tools[0], dict) else {}
    fn = first.get("function") if isinstance(first.get("function"), dict) else first
    name = fn.get("name")
    return name if isinstance(name, str) and name else "tool"


@dataclass(frozen=True, slots=True)
class Generation:
    """``reasoning`` tokens, then ``answer`` tokens (content, or the arguments of a call to ``tool``),
    ``per_chunk`` tokens to a streamed chunk. Token i is ``piece(i)`` (one token each: server.WORDS, or
    a tokenizer's single-token words)."""

    piece: Callable[[int], str]
    reasoning: int
    answer: int
    per_chunk: int = 1
    tool: str | None = None
    call_id: str = "call-mock"
    field: str = "reasoning_content"  # or "reasoning" (vLLM since 0.11)

    @property
    def tokens(self) -> int:
        return self.reasoning + self.answer

    @property
    def chunks(self) -> int:
        return -(-self.tokens // self.per_chunk)

    @property
    def plain(self) -> bool:
        """One content token a chunk: what server.py streams by itself."""
        return self.reasoning == 0 and self.per_chunk == 1 and self.tool is None

    @property
    def first_answer_chunk(self) -> int | None:
        return self.reasoning // self.per_chunk if self.answer else None

    def finish(self) -> str:
        return "tool_calls" if self.tool is not None else "stop"

    def usage(self, prompt_tokens: int) -> dict[str, Any]:
        """OpenAI's usage object: the reasoning is part of the completion tokens."""
        u: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": self.tokens,
            "total_tokens": prompt_tokens + self.tokens,
        }
        if self.reasoning:
            u["completion_tokens_details"] = {"reasoning_tokens": self.reasoning}
        return u

    def _words(self, a: int, b: int) -> str:
        return "".join(map(self.piece, range(a, b)))

    def _answer(self, a: int, b: int) -> str:
        """Answer tokens a..b (counted from the first token of the response); a tool call's arguments
        are one JSON object, ``{"text": "<the words>"}``."""
        text = self._words(a, b)
        if self.tool is None:
            return text
        return ('{"text":"' if a == self.reasoning else "") + text + ('"}' if b == self.tokens else "")

    def _call(self, arguments: str) -> dict[str, Any]:
        return {"id": self.call_id, "type": "function", "function": {"name": self.tool, "arguments": arguments}}

    def delta(self, c: int) -> dict[str, Any]:
        """The chat delta of streamed chunk c: its reasoning and answer tokens (both, at the boundary)."""
        a, b = c * self.per_chunk, min(self.tokens, (c + 1) * self.per_chunk)
        d: dict[str, Any] = {"role": "assistant"} if c == 0 else {}
        if a < self.reasoning:
            d[self.field] = self._words(a, min(b, self.reasoning))
        if (s := max(a, self.reasoning)) < b:
            if self.tool is None:
                d["content"] = self._answer(s, b)
            else:
                args = self._answer(s, b)
                call = self._call(args) if s == self.reasoning else {"function": {"arguments": args}}
                d["tool_calls"] = [{"index": 0, **call}]
        return d

    def event(self, c: int, chat: bool) -> bytes:
        """The end of chunk c's ``data:`` line, after the ``"choices":[{"index":0,`` its head has."""
        if chat:
            part = '"delta":' + json.dumps(self.delta(c), separators=_COMPACT)
        else:
            part = '"text":' + json.dumps(self._words(c * self.per_chunk, min(self.tokens, (c + 1) * self.per_chunk)))
        return (part + ',"finish_reason":null}]}\n\n').encode()

    def choice(self, chat: bool, finish: str) -> dict[str, Any]:
        """The one choice of a non-streamed response."""
        if not chat:
            return {"index": 0, "text": self._words(0, self.tokens), "finish_reason": finish}
        answer = self._answer(self.reasoning, self.tokens)
        message: dict[str, Any] = {"role": "assistant", "content": None if self.tool else answer}
        if self.reasoning:
            message[self.field] = self._words(0, self.reasoning)
        if self.tool is not None:
            message["tool_calls"] = [self._call(answer)]
        return {"index": 0, "message": message, "finish_reason": finish}
