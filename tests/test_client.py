"""The request path against httpx2.MockTransport: parsing, token sources, error classes, secrets."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

import httpx2
import pytest

from loadtest.analysis.records import RequestRecord
from loadtest.transport.client import make_endpoint, send
from loadtest.workload.prompts import PromptItem
from loadtest.workload.tokens import count_tokens

KEY = "sk-test-SECRET-0123456789"
CHAT = PromptItem(messages=[{"role": "user", "content": "hi there"}], prompt=None, max_tokens=8, input_tokens=2)
COMP = PromptItem(messages=None, prompt="hi there", max_tokens=8, input_tokens=2)


def sse(*events: object, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + (["data: [DONE]\n\n"] if done else [])
    return "".join(lines).encode()


def chat_chunk(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


async def call(
    handler: Callable[[httpx2.Request], httpx2.Response],
    item: PromptItem = CHAT,
    api: str = "chat",
    stream: bool = True,
    timeout_s: float = 5.0,
    answer: list[str] | None = None,
) -> tuple[RequestRecord, list[httpx2.Request]]:
    seen: list[httpx2.Request] = []

    def wrapped(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return handler(request)

    client = make_endpoint(
        "http://127.0.0.1:1/v1",
        KEY,
        max_connections=4,
        timeout_s=timeout_s,
        connect_timeout_s=1,
        transport=httpx2.MockTransport(wrapped),
    )
    rec = await send(
        client,
        RequestRecord(id=1, step=0),
        item,
        model="m",
        api=api,
        stream=stream,  # type: ignore[arg-type]
        extra_body={"temperature": 0},
        t0=time.perf_counter_ns(),
        timeout_s=timeout_s,
        answer=answer,
    )
    await client.close()
    return rec, seen


async def test_streamed_chat_with_usage() -> None:
    body = sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        chat_chunk("Hello"),
        chat_chunk(" world"),
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}},
    )
    rec, seen = await call(
        lambda r: httpx2.Response(200, content=body, headers={"x-ratelimit-remaining-requests": "9"})
    )
    sent = json.loads(seen[0].content)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["temperature"] == 0 and sent["max_tokens"] == 8 and sent["messages"] == CHAT.messages
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert rec.status == "ok" and len(rec.chunk_times_ns) == 2  # the role-only chunk carries no content
    assert rec.first_token_ns is not None and rec.sent_ns <= rec.first_token_ns <= rec.end_ns
    # (one read carried all of it: which read each time comes from is checked by the test of separate reads)
    assert (rec.input_tokens, rec.output_tokens, rec.tokens_source) == (11, 2, "usage")
    assert rec.ratelimit == {"x-ratelimit-remaining-requests": "9"} and rec.http_status == 200


async def test_no_usage_falls_back_to_tiktoken() -> None:
    text = [" alpha", " beta", " gamma delta"]
    rec, _ = await call(lambda r: httpx2.Response(200, content=sse(*(chat_chunk(t) for t in text))))
    assert rec.status == "ok" and rec.tokens_source == "tiktoken"
    assert rec.output_tokens == count_tokens("".join(text)) and rec.input_tokens == 2


async def test_completions_api_streamed_and_not() -> None:
    body = sse(
        {"choices": [{"index": 0, "text": "a b"}]},
        {"choices": [{"index": 0, "text": " c"}]},
        {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}},
    )
    rec, seen = await call(lambda r: httpx2.Response(200, content=body), item=COMP, api="completions")
    assert seen[0].url.path == "/v1/completions" and json.loads(seen[0].content)["prompt"] == "hi there"
    assert rec.status == "ok" and len(rec.chunk_times_ns) == 2 and rec.output_tokens == 3
    whole = {"choices": [{"index": 0, "text": "x y z"}], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}
    rec, seen = await call(lambda r: httpx2.Response(200, json=whole), item=COMP, api="completions", stream=False)
    assert "stream_options" not in json.loads(seen[0].content)
    assert rec.status == "ok" and rec.stream is False and rec.chunk_times_ns == []
    assert rec.first_token_ns == rec.end_ns and rec.output_tokens == 3


async def test_http_429_keeps_status_retry_after_and_headers() -> None:
    headers = {"retry-after": "2", "x-ratelimit-limit-requests": "60", "x-ratelimit-reset-requests": "1s"}
    rec, _ = await call(lambda r: httpx2.Response(429, json={"error": {"message": "slow down"}}, headers=headers))
    assert rec.status == "error" and rec.error_class == "http_429" and rec.http_status == 429
    assert rec.retry_after_s == 2.0
    assert rec.ratelimit == {"x-ratelimit-limit-requests": "60", "x-ratelimit-reset-requests": "1s"}


@pytest.mark.parametrize(
    ("status", "cls"), [(500, "http_5xx"), (503, "http_5xx"), (400, "http_4xx"), (401, "http_4xx")]
)
async def test_http_errors(status: int, cls: str) -> None:
    rec, _ = await call(lambda r: httpx2.Response(status, text="x" * 5000))
    assert rec.error_class == cls and rec.http_status == status
    assert rec.error is not None and len(rec.error) <= 200  # server text truncated


async def test_connect_error() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    rec, _ = await call(refuse)
    assert rec.status == "error" and rec.error_class == "connect" and rec.http_status is None


async def test_read_timeout() -> None:
    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    rec, _ = await call(slow)
    assert rec.error_class == "timeout"


async def test_bad_json_in_stream_is_bad_response() -> None:
    body = sse(chat_chunk("ok")).replace(b"data: [DONE]", b"data: {not json\n\ndata: [DONE]")
    rec, _ = await call(lambda r: httpx2.Response(200, content=body))
    assert rec.error_class == "bad_response"
    assert rec.first_token_ns is not None  # partial timing kept


async def test_stream_without_done_is_broken() -> None:
    rec, _ = await call(lambda r: httpx2.Response(200, content=sse(chat_chunk("a"), done=False)))
    assert rec.error_class == "stream_broken" and rec.first_token_ns is not None


async def test_connection_dropped_mid_stream() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield sse(chat_chunk("a"), done=False)
        raise httpx2.ReadError("connection reset by peer")

    rec, _ = await call(lambda r: httpx2.Response(200, content=body()))
    assert rec.error_class == "stream_broken" and len(rec.chunk_times_ns) == 1


async def test_error_object_inside_stream() -> None:
    rec, _ = await call(
        lambda r: httpx2.Response(200, content=sse(chat_chunk("a"), {"error": {"message": "overloaded"}}))
    )
    assert rec.error_class == "stream_error" and "overloaded" in (rec.error or "")


async def test_key_never_in_error_text() -> None:
    rec, _ = await call(lambda r: httpx2.Response(401, json={"error": {"message": f"invalid key {KEY}"}}))
    assert rec.error_class == "http_4xx" and KEY not in (rec.error or "") and "[redacted]" in (rec.error or "")


async def _raw_server(reply: bytes, close: bool) -> tuple[object, str]:
    """A one-trick HTTP server on 127.0.0.1: sends ``reply`` to each request, then hangs up (or stalls)."""
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(30)  # a stalled server: the client's timeout must fire first

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


async def _real(base_url: str, timeout_s: float = 5.0) -> RequestRecord:
    client = make_endpoint(base_url, KEY, max_connections=2, timeout_s=timeout_s, connect_timeout_s=1)
    rec = await send(
        client,
        RequestRecord(id=1, step=0),
        CHAT,
        model="m",
        api="chat",
        stream=True,
        extra_body=None,
        t0=time.perf_counter_ns(),
        timeout_s=timeout_s,
    )
    await client.close()
    return rec


async def test_real_transport_server_hangs_up_mid_stream() -> None:
    chunk = sse(chat_chunk("a"), done=False)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    server, url = await _raw_server(head + b"%x\r\n%s\r\n" % (len(chunk), chunk), close=True)
    try:
        rec = await _real(url)
    finally:
        server.close()  # type: ignore[attr-defined]
    assert rec.error_class == "stream_broken" and rec.http_status == 200 and len(rec.chunk_times_ns) == 1


@pytest.mark.timing
async def test_real_transport_stalled_server_times_out() -> None:
    server, url = await _raw_server(b"", close=False)
    try:
        rec = await _real(url, timeout_s=0.5)
    finally:
        server.close()  # type: ignore[attr-defined]
    assert rec.error_class == "timeout"
    assert 0.4 < (rec.end_ns - rec.sent_ns) / 1e9 < 3


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_a_query_in_base_url_stays_after_the_api_path(api: str) -> None:
    """Azure OpenAI's deployments take ``?api-version=`` on every call: the path goes before it."""
    seen: list[httpx2.URL] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.url)
        return httpx2.Response(200, content=sse(chat_chunk("a")))

    ep = make_endpoint(
        "https://res.openai.azure.com/openai/deployments/gpt?api-version=2024-10-21",
        KEY,
        max_connections=1,
        timeout_s=5,
        connect_timeout_s=1,
        transport=httpx2.MockTransport(handler),
    )
    rec = RequestRecord(id=1, step=0)
    await send(ep, rec, CHAT, model="m", api=api, stream=True, extra_body=None, t0=0, timeout_s=5)  # type: ignore[arg-type]
    path = "chat/completions" if api == "chat" else "completions"
    assert [str(u) for u in seen] == [
        f"https://res.openai.azure.com/openai/deployments/gpt/{path}?api-version=2024-10-21"
    ]


def _chunked(event: dict[str, object] | str) -> bytes:
    """One SSE event as one piece of chunked framing."""
    data = b"data: " + (event if isinstance(event, str) else json.dumps(event)).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_first_token_is_the_first_content_read_not_the_role_or_usage_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that sends the head, a role-only chunk (OpenAI's shape, content ""), two content chunks,
    a usage-only chunk and [DONE], each in a read of its own, the next only once the client has
    received the last (and 5 ms later, past the transport's 0.2 ms read coalescing). The reads' own
    arrival stamps are the reference: TTFT is the first content read's, chunks are content reads only."""
    import asyncio

    from loadtest.transport import netconn

    reads: list[tuple[bytes, int]] = []  # what the client's connection received, and when it stamped it
    arrived = asyncio.Event()
    received = netconn.Connection.data_received

    def observed(self: netconn.Connection, data: bytes) -> None:
        received(self, data)
        reads.append((bytes(data), self.pending[-1][1]))
        arrived.set()

    monkeypatch.setattr(netconn.Connection, "data_received", observed)
    usage = {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    parts = [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        _chunked({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}}]}),
        _chunked(chat_chunk("Hello")),
        _chunked(chat_chunk(" world")),
        _chunked({"choices": [], "usage": usage}),
        _chunked("[DONE]") + b"0\r\n\r\n",
    ]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for i, part in enumerate(parts):
            if i:
                await arrived.wait()  # the client has the last read: this one is a read of its own
                await asyncio.sleep(0.005)
            arrived.clear()
            writer.write(part)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    client = make_endpoint(url, KEY, max_connections=1, timeout_s=5, connect_timeout_s=1)
    try:
        rec = await send(
            client, RequestRecord(id=1, step=0), CHAT, model="m", api="chat", stream=True, extra_body=None, t0=0,
            timeout_s=5,
        )  # fmt: skip
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert [data for data, _ in reads] == parts  # one read each, as sent
    head, role, hello, world, usage_read, done = (t for _, t in reads)
    assert rec.status == "ok" and (rec.output_tokens, rec.tokens_source) == (2, "usage")
    assert rec.first_token_ns == hello > role  # t0=0: record times are the reads' own stamps
    assert rec.chunk_times_ns == [hello, world]  # the role-only and usage-only chunks are not chunks
    assert rec.last_token_ns == world < usage_read
    assert rec.end_ns == done and rec.sent_ns < head


def _vllm_like(text: str, created: int = 1764140000, usage: object = None) -> bytes:
    """One chunk as vLLM writes it (id, created and model repeated, compact separators, raw UTF-8)."""
    chunk = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": created, "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}],
             "usage": usage}  # fmt: skip
    return b"data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def test_a_vllm_like_stream_gives_back_its_answer_chunks_and_usage() -> None:
    """Chunks as vLLM writes them, with quotes, backslashes, raw UTF-8, an empty content, a chunk
    whose created field moved, and usage on the last one: the answer, the chunk count and the usage
    are what the stream held."""
    pieces = ["Hello", " world", ' say "hi"', " back\\slash", " caf\u00e9", " naïve", "", " m", " again"]
    body = b"".join(_vllm_like(p) for p in pieces[:6])
    body += _vllm_like(pieces[6]) + _vllm_like(pieces[7]) + _vllm_like(pieces[8], created=1764140001)
    body += _vllm_like(" end", usage={"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12})
    body += b"data: [DONE]\n\n"
    answer: list[str] = []
    rec, _ = await call(lambda r: httpx2.Response(200, content=body), answer=answer)
    expected = "".join(pieces) + " end"
    assert rec.status == "ok" and answer == [expected], answer
    assert len(rec.chunk_times_ns) == 9  # every piece but the empty one
    assert (rec.output_tokens, rec.tokens_source) == (9, "usage")


async def test_an_escaped_content_string_is_decoded_as_json() -> None:
    """A server that escapes non-ASCII (Python's json, ensure_ascii): each piece is decoded as JSON."""
    pieces = ["caf\u00e9", " \u00fcber", " plain", " more"]
    body = (
        b"".join(
            b"data: " + json.dumps({"id": "x", "choices": [{"index": 0, "delta": {"content": p}}]}).encode() + b"\n\n"
            for p in pieces
        )
        + b"data: [DONE]\n\n"
    )
    answer: list[str] = []
    rec, _ = await call(lambda r: httpx2.Response(200, content=body), answer=answer)
    assert answer == ["".join(pieces)] and len(rec.chunk_times_ns) == 4
