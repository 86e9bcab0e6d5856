"""The Responses API (``POST /responses``): its streamed events and its whole response, read into a record.

A stream is ``event: <type>`` / ``data: <json>`` pairs (OpenAI, vLLM, SGLang; llama.cpp sends fewer
fields), dispatched here on ``data.type`` only: servers differ in ids, indices and sequence numbers,
so nothing else is relied on. Output chunks, as in chat: ``response.output_text.delta`` and
``response.refusal.delta`` (the answer), ``response.reasoning_text.delta`` (vLLM, llama.cpp) and
``response.reasoning_summary_text.delta`` (OpenAI, SGLang) (reasoning: both count, as neither
AIPerf nor GuideLLM alone does), ``response.function_call_arguments.delta`` (a tool call: the
answer). ``response.created`` / ``in_progress`` come before prefill ends and the ``*.done`` events
repeat text already streamed: neither is a chunk, so TTFT keeps its meaning. The stream ends with
``response.completed`` or ``response.incomplete`` (its usage: ``input_tokens``, ``output_tokens``
with ``output_tokens_details.reasoning_tokens`` inside them); ``response.failed`` and ``error`` fail
the request; no ``[DONE]`` is sent (one from a gateway is ignored); an end without a terminal event
is a broken stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson

from loadtest.analysis.records import RequestRecord
from loadtest.transport.outputs import Side
from loadtest.workload.tools import ToolCall

__all__ = ["StreamFailed", "chat_usage", "read_events", "response_output"]

_NS = time.perf_counter_ns
_ANSWER = frozenset({"response.output_text.delta", "response.refusal.delta"})
_REASONING = frozenset({"response.reasoning_text.delta", "response.reasoning_summary_text.delta"})
_ARGS = "response.function_call_arguments.delta"
_TERMINAL = frozenset({"response.completed", "response.incomplete"})


class StreamFailed(Exception):
    """The server reported a failure inside a 200 response (an error event, a failed response)."""


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """A Responses ``usage`` in chat's names (``prompt_tokens``, ``completion_tokens``, reasoning in
    ``completion_tokens_details``), for the counting every API shares; None without output tokens."""
    if not isinstance(usage, dict) or not isinstance(usage.get("output_tokens"), int):
        return None
    out: dict[str, Any] = {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage["output_tokens"]}
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
        out["completion_tokens_details"] = {"reasoning_tokens": details["reasoning_tokens"]}
    return out


def _failure(obj: dict[str, Any]) -> str:
    err = obj.get("error") or (obj.get("response") or {}).get("error") or {}
    return str(err.get("message") or err.get("code") or "response failed") if isinstance(err, dict) else str(err)


def _item_calls(items: Any, calls: dict[Any, ToolCall]) -> None:
    """The function calls of a response's ``output`` items, where the stream did not announce them."""
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get("type") == "function_call":
            key = item.get("id") or len(calls)
            if key not in calls:
                calls[key] = ToolCall(str(item.get("call_id") or key), str(item.get("name") or ""), "")
            if isinstance(item.get("arguments"), str):
                calls[key].arguments = item["arguments"]


def _event(obj: dict[str, Any], calls: dict[Any, ToolCall]) -> dict[str, Any] | None:
    """An event that carries no output: a call announced or done, the end. Returns the final response
    object of a terminal event (None otherwise)."""
    kind = obj.get("type")
    if kind in _TERMINAL:
        response = obj.get("response") or {}
        if not calls:
            _item_calls(response.get("output"), calls)
        return response if isinstance(response, dict) else {}
    if kind in ("response.output_item.added", "response.output_item.done"):
        _item_calls([obj.get("item")], calls)
    elif kind in ("response.failed", "error"):
        raise StreamFailed(_failure(obj))
    return None


async def read_events(
    chunks: AsyncIterator[bytes], arrival: Any, rec: RequestRecord, t0: int, pieces: list[str], side: Side
) -> dict[str, Any] | None:
    """Fill ``rec``'s chunk times and ``pieces`` (the answer) and ``side`` (reasoning, call arguments)
    from a streamed response; returns its usage in chat's names. ``arrival``: h1's body, whose
    ``read_ns`` stamps each read (None: stamp when parsed)."""
    loads = orjson.loads
    times = rec.chunk_times_ns
    final: dict[str, Any] | None = None
    tail = b""
    async for raw in chunks:
        t = (arrival.read_ns if arrival is not None else _NS()) - t0
        lines = (tail + raw).split(b"\n")
        tail = lines.pop()
        for line in lines:
            if not line.startswith(b"data:") or line.startswith(b"data: [DONE]"):
                continue
            obj = loads(line[5:])
            kind = obj.get("type")
            delta = obj.get("delta")
            if kind in _ANSWER or kind == _ARGS:
                if not delta:
                    continue
                times.append(t)
                (pieces if kind in _ANSWER else side.tool_args).append(delta)
                if rec.first_answer_ns is None:
                    rec.first_answer_ns = t
                if kind == _ARGS and (call := side.calls.get(obj.get("item_id"))) is not None:
                    call.arguments += delta
            elif kind in _REASONING:
                if delta:
                    times.append(t)
                    side.reasoning.append(delta)
            elif (done := _event(obj, side.calls)) is not None:
                final = done
    rec.end_ns = (arrival.read_ns if arrival is not None else _NS()) - t0
    if times:
        rec.first_token_ns, rec.last_token_ns = times[0], times[-1]
    if final is None:
        raise httpx2.RemoteProtocolError("stream ended without response.completed")
    return chat_usage(final.get("usage"))


def response_output(obj: dict[str, Any], calls: dict[Any, ToolCall]) -> tuple[str, str, dict[str, Any] | None]:
    """(every output text, its reasoning part, usage in chat's names) of a response that was not
    streamed; its function calls go into ``calls``."""
    if obj.get("status") == "failed":
        raise StreamFailed(_failure(obj))
    answer, reasoning, args = [], [], []
    for item in obj.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            answer += [p.get("text") or p.get("refusal") or "" for p in item.get("content") or ()]
        elif kind == "reasoning":
            reasoning += [p.get("text") or "" for p in [*(item.get("summary") or ()), *(item.get("content") or ())]]
        elif kind == "function_call":
            args.append(item.get("arguments") or "")
    _item_calls(obj.get("output"), calls)
    text = "".join(reasoning)
    return text + "".join(answer) + "".join(args), text, chat_usage(obj.get("usage"))
