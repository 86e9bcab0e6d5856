"""An OpenAI-compatible mock server on a bare asyncio protocol (uvloop).

A web framework would make the mock the bottleneck of the very benchmarks it exists for: it must
stream tens of thousands of chunks a second from one core. The HTTP it needs is small: HTTP/1.1
keep-alive, requests with Content-Length bodies, chunked responses (``wire.py``); the timing of a
completion is in ``completion.py``.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (streaming
with ``usage`` when ``stream_options.include_usage`` is asked, and not), ``POST /v1/responses`` (the
Responses API's events: ``responses.py``), ``POST /v1/embeddings`` (``embeddings.py``); images in a
prompt count as prompt tokens by OpenAI's rule (``inputs.py``); ``GET /mock/stats``
(what the mock itself measured: requests, peak in-flight, queue, TTFT/ITL it sent), ``GET /mock/requests``
(the last ``request_log`` requests: time received on the host's monotonic clock, path, headers without
secrets, body, the answer's text), ``POST /mock/reset``, and the tokenize routes of vLLM, llama-server and
llama-cpp-python (``tokenizer.py``). With ``api_key_header`` the ``/v1/`` routes want the key (the value of the variable
``api_key_env``, read by the mock process itself) in that header, as Azure OpenAI and gateways do; else 401.
With ``slots`` at most that many requests generate at once and the rest wait in line (``state.py``).
``GET /metrics`` is Prometheus text with vLLM's names (``metrics.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import socket
import ssl
import struct
from typing import Any

from loadtest.config.mock import MockSettings
from loadtest.mock.completion import complete, output_tokens
from loadtest.mock.embeddings import embed, embeddings_inputs, warm
from loadtest.mock.metrics import CONTENT_TYPE, render
from loadtest.mock.state import WORDS, MockState
from loadtest.mock.tokenizer import tokenize_route, words_encode
from loadtest.mock.wire import error, now, response

__all__ = ["WORDS", "MockProtocol", "MockState", "serve"]

_REASONS = {"500": "Internal Server Error", "502": "Bad Gateway", "503": "Service Unavailable"}
_APIS = {  # the routes that answer a model's output, and their API
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/responses": "responses",  # responses.py
    "/v1/embeddings": "embeddings",  # embeddings.py
}


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
    return response("401 Unauthorized", json.dumps({"error": error}).encode())


class MockProtocol(asyncio.Protocol):
    def __init__(self, state: MockState) -> None:
        self.state = state
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.extra = b""  # rate-limit header lines for the response being written
        self.request_headers: dict[str, str] = {}  # of the request being answered (one at a time)
        self.received = 0.0  # when the request being answered had arrived whole
        self.logged: dict[str, Any] | None = None  # its entry in the request log (None: the log is off)

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
            self.send(error("400 Bad Request", "malformed request line"), close=True)
            return
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0") or 0)
        if len(self.buf) < end + 4 + length:
            return  # wait for the rest of the body
        self.received = now()
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

    def send(self, data: bytes, close: bool = False) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if close:
                self.transport.close()

    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), as a crashed or overloaded proxy does."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    async def _handle(self, method: str, path: str, raw: bytes, close: bool) -> None:
        state = self.state
        if path.startswith("/v1/") and (denied := _auth_error(state, self.request_headers)) is not None:
            self.send(denied, close)
            return
        if (answer := self._service(method, path, raw)) is not None:
            self.send(answer, close)
            return
        if method != "POST" or path not in _APIS:
            self.send(error("404 Not Found", f"no route {method} {path}"), close)
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            self.send(error("400 Bad Request", "request body is not a JSON object"), close)
            return
        self.logged = state.record(self.received, method, path, self.request_headers, body)
        api = _APIS[path]
        state.apis.received(api, body)
        if api == "embeddings" and isinstance(bad := embeddings_inputs(body), bytes):
            self.send(bad, close)
            return
        if self._throttled(body, close, generates=api != "embeddings"):
            return
        await self._generate(body, api, close)

    def _service(self, method: str, path: str, raw: bytes) -> bytes | None:
        """The answer of a route that generates nothing (models, the mock's own routes, tokenize); None otherwise."""
        state = self.state
        if method == "GET" and path == "/v1/models":
            body = {"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "loadtest"}]}
            return response("200 OK", json.dumps(body).encode())
        if method == "GET" and path == "/metrics" and state.config.metrics == "vllm":  # no key asked, as vLLM's
            return response("200 OK", render(state), CONTENT_TYPE.encode())
        if method == "GET" and path == "/mock/stats":
            return response("200 OK", json.dumps(state.stats()).encode())
        if method == "GET" and path == "/mock/requests":
            return response("200 OK", json.dumps(list(state.log)).encode())
        if method == "POST" and path == "/mock/reset":
            state.reset()
            return response("200 OK", b"{}")
        if method == "POST" and path in ("/tokenize", "/extras/tokenize"):
            encode = state.tok.encode if state.tok is not None else words_encode
            return response(*tokenize_route(path, raw, state.config.tokenize, encode))
        return None

    def _throttled(self, body: dict[str, Any], close: bool, generates: bool = True) -> bool:
        """Charge the rate limiter (when there is one); True when the request got a 429. ``generates``:
        False for embeddings, charged their input tokens only."""
        state = self.state
        self.extra = b""
        if state.limiter is None:
            return False
        n_out, max_tokens = output_tokens(body, state.config) if generates else (0, 0)
        # charged at admission as providers do: prompt tokens + max_tokens (what it will generate if unset)
        tokens = state.prompt_tokens(body) + (max_tokens if max_tokens is not None else n_out)
        admitted, wait, headers = state.limiter.admit(now(), tokens)
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        if admitted:
            return False
        state.throttled += 1
        retry = b"retry-after: %d\r\nretry-after-ms: %d\r\n" % (math.ceil(wait), math.ceil(wait * 1e3))
        message = state.limiter.refusal(str(body.get("model", "mock-model")), tokens, wait)
        self.send(error("429 Too Many Requests", message, "rate_limit_exceeded", self.extra + retry), close)
        return True

    async def _generate(self, body: dict[str, Any], api: str, close: bool) -> None:
        state = self.state
        state.requests += 1
        state.in_flight += 1
        state.in_flight_max = max(state.in_flight_max, state.in_flight)
        fault = state.fault_plan.next()
        try:
            if fault is not None:
                state.faults[fault] = state.faults.get(fault, 0) + 1
                if await self._early_fault(fault, close):
                    return
            async with state.generating():
                if api == "embeddings":
                    await embed(self, state, body, close, fault)
                else:
                    await complete(self, state, body, api != "completions", close, fault, api == "responses")
        finally:
            state.in_flight -= 1

    async def _early_fault(self, fault: str, close: bool) -> bool:
        """Faults before any response byte. True when the request is answered (or killed)."""
        if fault.startswith("http_5"):
            code = fault[5:8]
            if fault.endswith("_empty"):
                self.send(f"HTTP/1.1 {code} {_REASONS[code]}\r\ncontent-length: 0\r\n\r\n".encode(), close)
            else:
                self.send(error(f"{code} {_REASONS[code]}", f"mock fault {fault}", "server_error"), close)
            return True
        if fault == "reset":
            self.reset()
            return True
        if fault == "slow_first_byte":
            await asyncio.sleep(self.state.config.slow_first_byte_s)
        return False


async def serve(config: MockSettings, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Start listening; the caller keeps the loop running. ``server.sockets[0]`` has the port."""
    state = MockState(config)
    warm()  # the embeddings' vectors
    loop = asyncio.get_running_loop()
    tls = None
    if config.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(config.tls_cert, config.tls_key)
        if config.tls_client_ca:
            tls.verify_mode = ssl.CERT_REQUIRED
            tls.load_verify_locations(config.tls_client_ca)
    return await loop.create_server(lambda: MockProtocol(state), host, port, backlog=4096, ssl=tls)
