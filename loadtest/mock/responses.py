"""``POST /v1/responses``: the Responses API's event stream and whole response, as OpenAI sends them.

The answer is the chat answer's (completion.py decides its tokens and their times): reasoning, then
text or a function call. Streamed, each event is ``event: <type>`` and ``data: <json>`` with a
``sequence_number`` from 0 (the framing OpenAI, vLLM and SGLang share); ``response.created`` and
``response.in_progress`` go out with the response head, before the first token. A reasoning item
streams ``response.reasoning_summary_text.delta`` (``summary``: OpenAI asked for a summary, SGLang),
``response.reasoning_text.delta`` (``text``: vLLM, llama.cpp) or nothing (``hidden``: OpenAI without a
summary, whose reasoning shows only in usage). The answer is a ``message`` item with
``response.output_text.delta`` events, or a ``function_call`` item with
``response.function_call_arguments.delta`` ones; each item opens with its first token and closes
with ``*.done`` events that repeat its whole text. The stream ends with ``response.completed`` (or
``response.incomplete`` when ``max_output_tokens`` cut it), whose usage counts ``input_tokens`` and
``output_tokens`` (reasoning included, and in ``output_tokens_details.reasoning_tokens``). No
``[DONE]``. Deltas carry OpenAI's ``obfuscation`` pad unless ``stream_options.include_obfuscation``
is false.
"""

from __future__ import annotations

import json
from typing import Any

from loadtest.mock.wire import chunk

__all__ = ["ResponsesFrames"]

_COMPACT = (",", ":")


class ResponsesFrames:
    """The events of one response; ``a`` is completion.py's answer (its generation, ids, usage)."""

    def __init__(self, a: Any, body: dict[str, Any], reasoning: str) -> None:
        self.a, self.gen, self.mode = a, a.gen, reasoning
        self.seq = 0
        self.pad = (body.get("stream_options") or {}).get("include_obfuscation", True) is not False
        k = a.index
        self.rid, self.rs = f"resp_mock{k}", f"rs_mock{k}"
        self.item = f"fc_mock{k}" if self.gen.tool is not None else f"msg_mock{k}"
        self.call_id = f"call_mock{k}"
        self.out_index = 1 if self.gen.reasoning else 0
        self.status = "incomplete" if a.finish == "length" else "completed"

    def _e(self, kind: str, **fields: Any) -> str:
        if self.pad and "delta" in fields:
            fields["obfuscation"] = "pad0123456789"[: 4 + len(fields["delta"]) % 9]
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {kind}\ndata: {json.dumps(event, separators=_COMPACT)}\n\n"

    def _response(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": self.rid,
            "object": "response",
            "created_at": self.a.created,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "model": self.a.model,
            "output": output,
            "parallel_tool_calls": True,
            "store": False,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        }

    def _usage(self) -> dict[str, Any]:
        prompt, n = self.a.usage["prompt_tokens"], self.gen.tokens
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": n,
            "output_tokens_details": {"reasoning_tokens": self.gen.reasoning},
            "total_tokens": prompt + n,
        }

    def _reasoning_item(self, text: str | None) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.rs, "type": "reasoning", "summary": []}
        if text is not None and self.mode == "summary":
            item["summary"] = [{"type": "summary_text", "text": text}]
        elif self.mode == "text":
            item["content"] = [] if text is None else [{"type": "reasoning_text", "text": text}]
        return item

    def _answer_item(self, text: str | None) -> dict[str, Any]:
        status = "in_progress" if text is None else ("incomplete" if self.status == "incomplete" else "completed")
        if self.gen.tool is not None:
            args = text or ""
            return {"id": self.item, "type": "function_call", "status": status, "arguments": args,
                    "call_id": self.call_id, "name": self.gen.tool}  # fmt: skip
        content = [] if text is None else [{"type": "output_text", "annotations": [], "text": text}]
        return {"id": self.item, "type": "message", "status": status, "role": "assistant", "content": content}

    def _output(self) -> list[dict[str, Any]]:
        g = self.gen
        items = [self._reasoning_item(g._words(0, g.reasoning))] if g.reasoning else []
        return [*items, self._answer_item(g._answer(g.reasoning, g.tokens))] if g.answer else items

    def opening(self) -> bytes:
        r = self._response("in_progress", [], None)
        return chunk((self._e("response.created", response=r) + self._e("response.in_progress", response=r)).encode())

    def _reasoning_events(self, a: int, b: int) -> list[str]:
        g, where = self.gen, {"item_id": self.rs, "output_index": 0}
        part = {"summary_index": 0} if self.mode == "summary" else {"content_index": 0}
        kinds = {"summary": ("reasoning_summary_part", "reasoning_summary_text", "summary_text"),
                 "text": ("content_part", "reasoning_text", "reasoning_text")}.get(self.mode)  # fmt: skip
        ev = []
        if a == 0:
            ev.append(self._e("response.output_item.added", output_index=0, item=self._reasoning_item(None)))
            if kinds:
                ev.append(self._e(f"response.{kinds[0]}.added", **where, **part, part={"type": kinds[2], "text": ""}))
        if kinds:
            ev.append(self._e(f"response.{kinds[1]}.delta", **where, **part, delta=g._words(a, b)))
        if b == g.reasoning:
            text = g._words(0, b)
            if kinds:
                ev.append(self._e(f"response.{kinds[1]}.done", **where, **part, text=text))
                ev.append(self._e(f"response.{kinds[0]}.done", **where, **part, part={"type": kinds[2], "text": text}))
            ev.append(self._e("response.output_item.done", output_index=0, item=self._reasoning_item(text)))
        return ev

    def _answer_events(self, a: int, b: int) -> list[str]:
        g, where = self.gen, {"item_id": self.item, "output_index": self.out_index}
        tool = g.tool is not None
        text_part = {"content_index": 0}
        ev = []
        if a == g.reasoning:
            ev.append(self._e("response.output_item.added", output_index=self.out_index, item=self._answer_item(None)))
            if not tool:
                part = {"type": "output_text", "annotations": [], "text": ""}
                ev.append(self._e("response.content_part.added", **where, **text_part, part=part))
        piece = g._answer(a, b)
        if tool:
            ev.append(self._e("response.function_call_arguments.delta", **where, delta=piece))
        else:
            ev.append(self._e("response.output_text.delta", **where, **text_part, delta=piece, logprobs=[]))
        if b == g.tokens:
            text = g._answer(g.reasoning, b)
            if tool:
                ev.append(self._e("response.function_call_arguments.done", **where, arguments=text, name=g.tool))
            else:
                part = {"type": "output_text", "annotations": [], "text": text}
                ev.append(self._e("response.output_text.done", **where, **text_part, text=text, logprobs=[]))
                ev.append(self._e("response.content_part.done", **where, **text_part, part=part))
            ev.append(self._e("response.output_item.done", output_index=self.out_index, item=self._answer_item(text)))
        return ev

    def event(self, c: int) -> bytes:
        """Streamed chunk ``c`` on the wire: the events of its tokens (nothing for hidden reasoning)."""
        g = self.gen
        a, b = c * g.per_chunk, min(g.tokens, (c + 1) * g.per_chunk)
        ev = self._reasoning_events(a, min(b, g.reasoning)) if a < g.reasoning else []
        if (s := max(a, g.reasoning)) < b:
            ev += self._answer_events(s, b)
        return chunk("".join(ev).encode()) if ev else b""

    def tail(self, done: bool) -> bytes:
        """``response.completed`` (or ``.incomplete``) with the output and usage, when ``done``; the body's end."""
        if not done:
            return b"0\r\n\r\n"
        r = self._response(self.status, self._output(), self._usage())
        return chunk(self._e(f"response.{self.status}", response=r).encode()) + b"0\r\n\r\n"

    def whole(self) -> dict[str, Any]:
        """The response object of a request that is not streamed."""
        return self._response(self.status, self._output(), self._usage())
