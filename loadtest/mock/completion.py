"""One completion, answered whole or streamed, at the times the mock's settings say.

Token i is due at ``start + ttft (+ the prefill of uncached prompt tokens: prefixcache.py) + gaps`` (fixed
deadlines, so the mock never drifts); a shared token
capacity (``capacity_tok_s``) pushes each token to the next free slot. Every token already due is
written in one go, so with zero delays a whole response is one write. ``start`` is when the request
got its generation slot (``slots``): time spent queueing is inside the client's TTFT, as on a real
server whose batch is full.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from loadtest.config.mock import MockSettings
from loadtest.mock.generation import Generation, tool_name
from loadtest.mock.responses import ResponsesFrames
from loadtest.mock.state import MAX_SAMPLES, MockState
from loadtest.mock.wire import chunk, now, response, sleep_until

__all__ = ["Conn", "complete", "output_tokens", "send_whole"]


class Conn(Protocol):
    """The connection a completion is written to (server.py's protocol)."""

    extra: bytes  # header lines (rate limits) for the response being written
    received: float  # when the request had arrived whole (now()): server-side TTFT counts from it
    logged: dict[str, Any] | None  # the request's entry in the request log, when it is on

    def send(self, data: bytes, close: bool = False) -> None: ...

    def reset(self) -> None: ...

    def closed(self) -> bool: ...


def output_tokens(body: dict[str, Any], cfg: MockSettings) -> tuple[int, int | None]:
    """(tokens the mock will generate, reasoning included, the max_tokens asked for)."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
    n = cfg.output_tokens + cfg.reasoning_tokens  # max_tokens caps both, as on vLLM and OpenAI
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        return n, None
    return (max_tokens if body.get("ignore_eos") else min(n, max_tokens)), max_tokens


@dataclass
class _Answer:
    """What one response holds, decided before its first byte."""

    rid: str
    chat: bool
    model: str
    created: int
    n_out: int
    finish: str
    usage: dict[str, Any]
    gen: Generation
    index: int  # the answer's number: its text is state.piece(i, index)

    def head(self) -> bytes:
        """The start of every streamed chunk, up to the choice's fields."""
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return (
            f'data: {{"id":"{self.rid}","object":"{kind}",'
            f'"created":{self.created},"model":{json.dumps(self.model)},"choices":[{{"index":0,'
        ).encode()


def _answer(state: MockState, body: dict[str, Any], chat: bool) -> _Answer:
    cfg = state.config
    n_out, max_tokens = output_tokens(body, cfg)
    state.ids += 1
    k = state.ids
    reasoning = min(cfg.reasoning_tokens, n_out) if chat else 0
    tool = tool_name(body) if chat else None
    gen = Generation(
        lambda i: state.piece(i, k), reasoning, n_out - reasoning, cfg.tokens_per_chunk, tool, f"call-mock-{k}",
        cfg.reasoning_field,
    )  # fmt: skip
    return _Answer(
        rid=f"{'chatcmpl' if chat else 'cmpl'}-mock-{k}",
        chat=chat,
        model=str(body.get("model", "mock-model")),
        created=int(time.time()),
        n_out=n_out,
        finish="length" if max_tokens is not None and n_out >= max_tokens else gen.finish(),
        usage=gen.usage(state.prompt_tokens(body)),
        gen=gen,
        index=k,
    )


class _Clock:
    """Due times of successive tokens: gaps of ``itl`` (with jitter), pushed back by a shared capacity."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.slot = 1.0 / state.config.capacity_tok_s if state.config.capacity_tok_s else 0.0

    def due(self, t: float) -> float:
        if self.slot:
            t = max(t, self.state.next_token_slot)
            self.state.next_token_slot = t + self.slot
        return t

    def after(self, t: float, tokens: int = 1) -> float:
        """When the token ``tokens`` tokens after one due at ``t`` is due."""
        for _ in range(tokens):
            t = self.due(t + self.state.gap(self.state.config.itl_ms))
        return t


async def complete(
    conn: Conn,
    state: MockState,
    body: dict[str, Any],
    chat: bool,
    close: bool,
    fault: str | None,
    responses: bool = False,
) -> None:
    """Answer one (chat) completion request, or a Responses API one (responses.py: the same tokens at
    the same times, in its events); ``fault`` may strike halfway (faults.py)."""
    start = now()
    answer = _answer(state, body, chat)
    if conn.logged is not None:  # the request log says what each request was answered (tests of conversations)
        choice = answer.gen.choice(chat, answer.finish)
        conn.logged["answer"] = choice["message"]["content"] if chat else choice["text"]
    clock = _Clock(state)
    prefill_s, cached, chain = state.prefill(body, start)
    state.metrics.admitted(answer.usage["prompt_tokens"], cached)
    due = clock.due(start + state.gap(state.config.ttft_ms) + prefill_s)
    if state.prefix is not None:  # usable once the prefill is done (its first token due); usage says the hit
        state.prefix.insert(chain, due)
        answer.usage["prompt_tokens_details"] = {"cached_tokens": cached}
    state.apis.tool_calls += answer.gen.tool is not None
    if responses:
        frames = ResponsesFrames(answer, body, state.config.responses_reasoning)
    if body.get("stream"):
        if responses:
            event, tail, opening = frames.event, frames.tail, frames.opening()
        else:
            include_usage = state.config.usage and bool((body.get("stream_options") or {}).get("include_usage"))
            event, tail, opening = _events(state, answer), functools.partial(_tail, answer, include_usage), b""
        await _stream(conn, state, answer, clock, start, due, close, fault, event, tail, opening)
    else:
        out = frames.whole() if responses else _chat_object(answer)
        await send_whole(conn, state, out, clock.after(due, answer.n_out - 1), start, close, fault)
        state.metrics.ttft.observe(due - conn.received)  # its first token was due then
    state.metrics.generation_tokens += answer.n_out


def _chat_object(a: _Answer) -> dict[str, Any]:
    return {
        "id": a.rid,
        "object": "chat.completion" if a.chat else "text_completion",
        "created": a.created,
        "model": a.model,
        "choices": [a.gen.choice(a.chat, a.finish)],
        "usage": a.usage,
    }


async def send_whole(
    conn: Conn, state: MockState, out: dict[str, Any] | bytes, due: float, start: float, close: bool, fault: str | None
) -> None:
    """A whole JSON answer (a dict, or its bytes) at ``due``; the mid-answer faults strike here."""
    await sleep_until(due)
    if fault == "stall":
        await asyncio.sleep(state.config.stall_s)
    if len(state.ttft_s) < MAX_SAMPLES:
        state.ttft_s.append(now() - conn.received)
    whole = response("200 OK", out if isinstance(out, bytes) else json.dumps(out).encode(), extra=conn.extra)
    if fault == "drop":
        conn.send(whole[: len(whole) - len(whole) // 3])
        conn.reset()
    elif fault == "malformed":
        conn.send(response("200 OK", b'{"choices": [{"message": '), close)
    else:
        conn.send(whole, close)


def _events(state: MockState, a: _Answer) -> Callable[[int], bytes]:
    """Chunk i of the stream, as bytes on the wire."""
    head = a.head()
    if not a.gen.plain:  # reasoning, a tool call or several tokens a chunk (generation.py)
        return lambda i: chunk(head + a.gen.event(i, a.chat))

    def token(i: int) -> bytes:
        word = state.piece(i, a.index)
        if a.chat:
            role = '"role":"assistant",' if i == 0 else ""
            part = f'"delta":{{{role}"content":"{word}"}},"finish_reason":null}}]}}\n\n'
        else:
            part = f'"text":"{word}","finish_reason":null}}]}}\n\n'
        return chunk(head + part.encode())

    return token


async def _stream(
    conn: Conn,
    state: MockState,
    a: _Answer,
    clock: _Clock,
    start: float,
    due: float,
    close: bool,
    fault: str | None,
    event: Callable[[int], bytes],
    tail: Callable[[bool], bytes],
    opening: bytes = b"",
) -> None:
    """Chunks as they fall due (``event(i)``: chunk i on the wire; ``tail(done)``: what ends the stream,
    with its end marker when ``done``; ``opening``: sent with the head); the mid-stream faults strike
    once half of them are out. (Long: the loop is the mock's hot path, kept in one piece so a chunk
    costs no extra calls.)"""
    conn.send(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n" + (b"connection: close\r\n" if close else b"") + conn.extra + b"\r\n"
        + opening
    )  # fmt: skip
    n_chunks, k, answer_at = a.gen.chunks, a.gen.per_chunk, a.gen.first_answer_chunk
    last_sent: float | None = None
    i = 0
    half = max(1, n_chunks // 2) if fault in ("drop", "malformed", "stall") else -1
    while i < n_chunks:
        if i == half:
            half = -1
            if fault == "drop":
                conn.reset()
                return
            if fault == "malformed":
                conn.send(chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "x"\n\n'))
            elif fault == "stall":
                await asyncio.sleep(state.config.stall_s)
                due = max(due, now())
        await sleep_until(due)
        t = now()
        pieces = []
        while i < n_chunks and due <= t and i != half:
            pieces.append(event(i))
            i += 1
            if i < n_chunks:
                due = clock.after(due, k)  # a chunk of k tokens: the next one is due k tokens later
        conn.send(b"".join(pieces))
        if conn.closed():
            return
        if last_sent is None:
            state.metrics.ttft.observe(t - conn.received)
        if len(state.itl_s) < MAX_SAMPLES:
            if last_sent is None:
                state.ttft_s.append(t - conn.received)
            else:
                state.itl_s.append(t - last_sent)
                state.itl_s.extend(0.0 for _ in range(len(pieces) - 1))
            if answer_at is not None and i > answer_at:
                state.ttfa_s.append(t - conn.received)
                answer_at = None
        last_sent = t
    conn.send(tail(fault != "no_done"), close)
    state.stream_chunks += n_chunks
    state.stream_tokens += a.n_out


def _tail(a: _Answer, include_usage: bool, done: bool) -> bytes:
    """The finish chunk, the usage chunk when asked for, ``[DONE]`` and the end of the chunked body."""
    end = b'"delta":{},' if a.chat else b'"text":"",'
    tail = [chunk(a.head() + end + f'"finish_reason":"{a.finish}"}}]}}\n\n'.encode())]
    if include_usage:
        kind = "chat.completion.chunk" if a.chat else "text_completion"
        u = (
            f'data: {{"id":"{a.rid}","object":"{kind}",'
            f'"created":{a.created},"model":{json.dumps(a.model)},"choices":[],"usage":{json.dumps(a.usage)}}}\n\n'
        )
        tail.append(chunk(u.encode()))
    if done:
        tail.append(chunk(b"data: [DONE]\n\n"))
    tail.append(b"0\r\n\r\n")
    return b"".join(tail)
