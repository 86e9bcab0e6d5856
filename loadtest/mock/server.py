"""An OpenAI-compatible mock server on a bare asyncio protocol (uvloop).

A web framework would make the mock the bottleneck of the very benchmarks it exists for: it must
stream tens of thousands of chunks a second from one core. The HTTP it needs is small: HTTP/1.1
keep-alive, requests with Content-Length bodies, chunked responses. Token times are scheduled
against fixed deadlines (``start + ttft + i * itl``), and every token already due is written in
one go, so the mock never drifts and, with zero delays, a whole response is one write.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (streaming
with ``usage`` when ``stream_options.include_usage`` is asked, and not), ``GET /mock/stats``
(what the mock itself measured: requests, peak in-flight, TTFT/ITL it sent), ``POST /mock/reset``,
and the tokenize routes of vLLM, llama-server and llama-cpp-python (``tokenizer.py``).
With ``api_key_header`` the ``/v1/`` routes want the key (the value of the variable ``api_key_env``,
read by the mock process itself) in that header, as Azure OpenAI and gateways do; else 401.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import random
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

from loadtest.config.mock import MockSettings
from loadtest.mock.faults import FaultPlan
from loadtest.mock.generation import Generation, tool_name
from loadtest.mock.limits import RateLimiter
from loadtest.mock.tokenizer import HFTokenizer, tokenize_route, words_encode

__all__ = [
    "WORDS",
    "MockProtocol",
    "MockState",
    "serve",
]

# Each is one token alone and inside any run of them, for both o200k_base and cl100k_base
# (checked by a test), so a tokenizer recount of the generated text equals the token count.
WORDS = (
    " the",
    " of",
    " and",
    " to",
    " in",
    " is",
    " that",
    " for",
    " it",
    " as",
    " with",
    " on",
    " was",
    " be",
    " by",
    " at",
    " this",
    " are",
    " from",
    " or",
)
_MAX_SAMPLES = 200_000


class MockState:
    """Shared by all connections of one server process."""

    def __init__(self, config: MockSettings) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.requests = 0
        self.in_flight = 0
        self.in_flight_max = 0
        self.next_token_slot = 0.0  # loop time of the next free slot under capacity_tok_s
        self.ttft_s: list[float] = []
        self.itl_s: list[float] = []
        self.ttfa_s: list[float] = []  # to the first answer chunk (after the reasoning)
        self.stream_chunks = self.stream_tokens = 0  # of the streams sent to the end
        self.ids = 0
        self.faults: dict[str, int] = {}
        self.fault_plan = FaultPlan(config.faults)
        self.throttled = 0
        self.limiter = self._limiter()
        self.connections = 0  # accepted (TCP) connections: how often a client opened a new one
        self.unauthorized = 0
        self.api_key = os.environ.get(config.api_key_env or "", "") if config.api_key_header else None
        self.tok = HFTokenizer(config.tokenizer) if config.tokenizer else None

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        return self.tok.prompt_tokens(body) if self.tok is not None else _prompt_words(body)

    def piece(self, i: int, k: int) -> str:
        """Text of generated token ``i`` of answer ``k``."""
        return self.tok.piece(i, k) if self.tok is not None else WORDS[i % len(WORDS)]

    def _limiter(self) -> RateLimiter | None:
        c = self.config
        limits = {
            ("requests", "minute"): c.rpm,
            ("tokens", "minute"): c.tpm,
            ("requests", "day"): c.rpd,
            ("tokens", "day"): c.tpd,
        }
        if not any(limits.values()):
            return None
        return RateLimiter(
            {k: v for k, v in limits.items() if v},
            burst_s=c.burst_s,
            dialect=c.ratelimit_headers,
            minute_s=c.ratelimit_minute_s,
        )

    def reset(self) -> None:
        self.requests = 0
        self.faults = {}
        self.fault_plan = FaultPlan(self.config.faults)
        self.throttled = 0
        self.unauthorized = 0
        self.limiter = self._limiter()
        self.connections = 0
        self.in_flight_max = self.in_flight
        self.ttft_s.clear()
        self.itl_s.clear()
        self.ttfa_s.clear()
        self.stream_chunks = self.stream_tokens = 0

    def stats(self) -> dict[str, Any]:
        def pct(values: list[float]) -> dict[str, float | None]:
            if not values:
                return {"p50": None, "p99": None, "count": 0}
            s = sorted(values)
            return {"p50": s[len(s) // 2] * 1e3, "p99": s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3, "count": len(s)}

        return {
            "connections": self.connections,
            "throttled": self.throttled,
            "unauthorized": self.unauthorized,
            "faults": self.faults,
            "requests": self.requests,
            "in_flight": self.in_flight,
            "in_flight_max": self.in_flight_max,
            "ttft_ms": pct(self.ttft_s),
            "itl_ms": pct(self.itl_s),
            "ttfa_ms": pct(self.ttfa_s),
            "stream_chunks": self.stream_chunks,
            "stream_tokens": self.stream_tokens,
        }

    def gap(self, base_ms: float) -> float:
        j = self.config.jitter_ms
        if j <= 0:
            return base_ms / 1e3
        return max(0.0, base_ms + self.rng.uniform(-j, j)) / 1e3


_now = time.perf_counter  # uvloop's loop.time() has 1 ms resolution: too coarse to schedule or measure ITL


async def _sleep_until(due: float) -> None:
    """Sleep until ``due`` (perf_counter seconds), never waking early.

    uvloop rounds a delay to the nearest millisecond, so a plain sleep can end 0.5 ms early; rounding
    the delay up to whole milliseconds costs at most ~1 ms of lateness and no busy-waiting.
    """
    while (delay := due - _now()) > 0:
        await asyncio.sleep(math.ceil(delay * 1e3) / 1e3)


def _prompt_words(body: dict[str, Any]) -> int:
    """Prompt tokens, estimated as whitespace-separated words (exact for loadtest's synthetic prompts)."""
    if isinstance(body.get("messages"), list):
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"] if isinstance(m, dict))
    prompt = body.get("prompt", "")
    return len(prompt.split()) if isinstance(prompt, str) else 0


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _response(
    status: str, body: bytes, ctype: bytes = b"application/json", close: bool = False, extra: bytes = b""
) -> bytes:
    """A whole response; ``extra``: more header lines, each ending in CRLF."""
    conn = b"connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s\r\n"
        % (status.encode(), ctype, len(body), conn, extra)
    ) + body


def _output_tokens(body: dict[str, Any], cfg: MockSettings) -> tuple[int, int | None]:
    """(tokens the mock will generate, reasoning included, the max_tokens asked for)."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    n = cfg.output_tokens + cfg.reasoning_tokens  # max_tokens caps both, as on vLLM and OpenAI
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        return n, None
    return (max_tokens if body.get("ignore_eos") else min(n, max_tokens)), max_tokens


def _generation(
    body: dict[str, Any], cfg: MockSettings, n_out: int, chat: bool, call_id: str, piece: Callable[[int], str]
) -> Generation:
    """What the response's n_out tokens are: reasoning first (chat), then content or a tool call;
    ``piece(i)`` is the text of token i."""
    reasoning = min(cfg.reasoning_tokens, n_out) if chat else 0
    tool = tool_name(body) if chat else None
    return Generation(piece, reasoning, n_out - reasoning, cfg.tokens_per_chunk, tool, call_id, cfg.reasoning_field)


def _error(status: str, message: str, kind: str = "invalid_request_error", extra: bytes = b"") -> bytes:
    return _response(status, json.dumps({"error": {"message": message, "type": kind}}).encode(), extra=extra)


def _auth_error(state: MockState, headers: dict[str, str]) -> bytes | None:
    """A 401 like OpenAI's when the request lacks the key or carries another one; None when it may pass.
    The body never echoes what was sent."""
    name = state.config.api_key_header
    if name is None or state.api_key is None:
        return None
    sent = headers.get(name.lower())
    if sent is not None and name.lower() == "authorization":
        scheme, _, sent = sent.partition(" ")
        sent = sent.strip() if scheme.lower() == "bearer" else None
    if sent and state.api_key and hmac.compare_digest(sent.encode(), state.api_key.encode()):
        return None
    state.unauthorized += 1
    message = f"You didn't provide an API key in the {name} header" if not sent else "Incorrect API key provided"
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    return _response("401 Unauthorized", json.dumps({"error": error}).encode())


class MockProtocol(asyncio.Protocol):
    def __init__(self, state: MockState) -> None:
        self.state = state
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.extra = b""  # rate-limit header lines for the response being written
        self.request_headers: dict[str, str] = {}  # of the request being answered (one at a time)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None or self.task.done():
            self._next_request()

    def _next_request(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        try:
            method, path, _ = head[0].split(" ", 2)
        except ValueError:
            self._send(_error("400 Bad Request", "malformed request line"), close=True)
            return
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0") or 0)
        if len(self.buf) < end + 4 + length:
            return  # wait for the rest of the body
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        close = headers.get("connection", "").lower() == "close"
        if path.startswith(("http://", "https://")):  # absolute form (through a proxy): servers must accept it
            path = "/" + path.split("/", 3)[-1]
        self.request_headers = headers
        self.task = asyncio.get_running_loop().create_task(self._handle(method, path.split("?")[0], body, close))
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not self.closing and self.buf:
            self._next_request()

    def _send(self, data: bytes, close: bool = False) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if close:
                self.transport.close()

    async def _handle(self, method: str, path: str, raw: bytes, close: bool) -> None:
        state = self.state
        if path.startswith("/v1/") and (denied := _auth_error(state, self.request_headers)) is not None:
            self._send(denied, close)
            return
        if method == "GET" and path == "/v1/models":
            body = {"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "loadtest"}]}
            self._send(_response("200 OK", json.dumps(body).encode()), close)
            return
        if method == "GET" and path == "/mock/stats":
            self._send(_response("200 OK", json.dumps(state.stats()).encode()), close)
            return
        if method == "POST" and path == "/mock/reset":
            state.reset()
            self._send(_response("200 OK", b"{}"), close)
            return
        if method == "POST" and path in ("/tokenize", "/extras/tokenize"):
            encode = state.tok.encode if state.tok is not None else words_encode
            self._send(_response(*tokenize_route(path, raw, state.config.tokenize, encode)), close)
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            self._send(_error("404 Not Found", f"no route {method} {path}"), close)
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            self._send(_error("400 Bad Request", "request body is not a JSON object"), close)
            return
        self.extra = b""
        if state.limiter is not None:
            n_out, max_tokens = _output_tokens(body, state.config)
            # charged at admission as providers do: prompt tokens + max_tokens (what it will generate if unset)
            tokens = state.prompt_tokens(body) + (max_tokens if max_tokens is not None else n_out)
            admitted, wait, headers = state.limiter.admit(_now(), tokens)
            self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
            if not admitted:
                state.throttled += 1
                retry = b"retry-after: %d\r\nretry-after-ms: %d\r\n" % (math.ceil(wait), math.ceil(wait * 1e3))
                message = state.limiter.refusal(str(body.get("model", "mock-model")), tokens, wait)
                self._send(_error("429 Too Many Requests", message, "rate_limit_exceeded", self.extra + retry), close)
                return
        state.requests += 1
        state.in_flight += 1
        state.in_flight_max = max(state.in_flight_max, state.in_flight)
        fault = state.fault_plan.next()
        try:
            if fault is not None:
                state.faults[fault] = state.faults.get(fault, 0) + 1
                if await self._early_fault(fault, close):
                    return
            await self._complete(body, path == "/v1/chat/completions", close, fault)
        finally:
            state.in_flight -= 1

    def _reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), as a crashed or overloaded proxy does."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    async def _early_fault(self, fault: str, close: bool) -> bool:
        """Faults before any response byte. True when the request is answered (or killed)."""
        if fault.startswith("http_5"):
            code = fault[5:8]
            reason = {"500": "Internal Server Error", "502": "Bad Gateway", "503": "Service Unavailable"}[code]
            if fault.endswith("_empty"):
                self._send(f"HTTP/1.1 {code} {reason}\r\ncontent-length: 0\r\n\r\n".encode(), close)
            else:
                self._send(_error(f"{code} {reason}", f"mock fault {fault}", "server_error"), close)
            return True
        if fault == "reset":
            self._reset()
            return True
        if fault == "slow_first_byte":
            await asyncio.sleep(self.state.config.slow_first_byte_s)
        return False

    async def _complete(self, body: dict[str, Any], chat: bool, close: bool, fault: str | None = None) -> None:
        state, cfg = self.state, self.state.config
        start = _now()
        n_out, max_tokens = _output_tokens(body, cfg)
        n_in = state.prompt_tokens(body)
        model = str(body.get("model", "mock-model"))
        state.ids += 1
        answer = state.ids
        rid = f"{'chatcmpl' if chat else 'cmpl'}-mock-{answer}"
        gen = _generation(body, cfg, n_out, chat, f"call-mock-{answer}", lambda i: state.piece(i, answer))
        finish = "length" if max_tokens is not None and n_out >= max_tokens else gen.finish()
        created = int(time.time())
        usage = gen.usage(n_in)

        # Token i is due at start + ttft + gaps; a shared capacity pushes it to the next free slot.
        due = start + state.gap(cfg.ttft_ms)
        slot = 1.0 / cfg.capacity_tok_s if cfg.capacity_tok_s else 0.0

        def next_due(t: float) -> float:
            if slot:
                t = max(t, state.next_token_slot)
                state.next_token_slot = t + slot
            return t

        if not body.get("stream"):
            for i in range(n_out):
                due = next_due(due if i == 0 else due + state.gap(cfg.itl_ms))
            await _sleep_until(due)
            choice = gen.choice(chat, finish)
            out = {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
            if fault == "stall":
                await asyncio.sleep(cfg.stall_s)
            if len(state.ttft_s) < _MAX_SAMPLES:
                state.ttft_s.append(_now() - start)
            whole = _response("200 OK", json.dumps(out).encode(), extra=self.extra)
            if fault == "drop":
                self._send(whole[: len(whole) - len(whole) // 3])
                self._reset()
            elif fault == "malformed":
                self._send(_response("200 OK", b'{"choices": [{"message": '), close)
            else:
                self._send(whole, close)
            return

        include_usage = cfg.usage and bool((body.get("stream_options") or {}).get("include_usage"))
        head = (
            f'data: {{"id":"{rid}","object":"{"chat.completion.chunk" if chat else "text_completion"}",'
            f'"created":{created},"model":{json.dumps(model)},"choices":[{{"index":0,'
        ).encode()
        self._send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n" + (b"connection: close\r\n" if close else b"") + self.extra + b"\r\n"
        )

        def token(i: int) -> bytes:
            word = state.piece(i, answer)
            if chat:
                role = '"role":"assistant",' if i == 0 else ""
                part = f'"delta":{{{role}"content":"{word}"}},"finish_reason":null}}]}}\n\n'
            else:
                part = f'"text":"{word}","finish_reason":null}}]}}\n\n'
            return _chunk(head + part.encode())

        # reasoning, a tool call or several tokens a chunk: chunk i of the generation
        event = token if gen.plain else lambda i: _chunk(head + gen.event(i, chat))
        n_chunks, k, answer_at = gen.chunks, gen.per_chunk, gen.first_answer_chunk
        due = next_due(due)
        last_sent: float | None = None
        i = 0
        half = max(1, n_chunks // 2) if fault in ("drop", "malformed", "stall") else -1
        while i < n_chunks:
            if i == half:  # the mid-stream faults strike once half the tokens are out
                half = -1
                if fault == "drop":
                    self._reset()
                    return
                if fault == "malformed":
                    self._send(_chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "x"\n\n'))
                elif fault == "stall":
                    await asyncio.sleep(cfg.stall_s)
                    due = max(due, _now())
            await _sleep_until(due)
            now = _now()
            pieces = []
            while i < n_chunks and due <= now and i != half:
                pieces.append(event(i))
                i += 1
                if i < n_chunks:
                    due = next_due(due + state.gap(cfg.itl_ms))
                    if k > 1:  # a chunk of k tokens: the next one is due k tokens later
                        for _ in range(k - 1):
                            due = next_due(due + state.gap(cfg.itl_ms))
            self._send(b"".join(pieces))
            if self.transport is None or self.transport.is_closing():
                return
            if len(state.itl_s) < _MAX_SAMPLES:
                if last_sent is None:
                    state.ttft_s.append(now - start)
                else:
                    state.itl_s.append(now - last_sent)
                    state.itl_s.extend(0.0 for _ in range(len(pieces) - 1))
                if answer_at is not None and i > answer_at:
                    state.ttfa_s.append(now - start)
                    answer_at = None
            last_sent = now
        end = b'"delta":{},' if chat else b'"text":"",'
        tail = [_chunk(head + end + f'"finish_reason":"{finish}"}}]}}\n\n'.encode())]
        if include_usage:
            u = (
                f'data: {{"id":"{rid}","object":"{"chat.completion.chunk" if chat else "text_completion"}",'
                f'"created":{created},"model":{json.dumps(model)},"choices":[],"usage":{json.dumps(usage)}}}\n\n'
            )
            tail.append(_chunk(u.encode()))
        if fault != "no_done":
            tail.append(_chunk(b"data: [DONE]\n\n"))
        tail.append(b"0\r\n\r\n")
        self._send(b"".join(tail), close)
        state.stream_chunks += n_chunks
        state.stream_tokens += n_out


async def serve(config: MockSettings, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Start listening; the caller keeps the loop running. ``server.sockets[0]`` has the port."""
    state = MockState(config)
    loop = asyncio.get_running_loop()
    tls = None
    if config.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(config.tls_cert, config.tls_key)
        if config.tls_client_ca:
            tls.verify_mode = ssl.CERT_REQUIRED
            tls.load_verify_locations(config.tls_client_ca)
    return await loop.create_server(lambda: MockProtocol(state), host, port, backlog=4096, ssl=tls)
