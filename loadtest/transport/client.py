"""One request -> one RequestRecord. The hot path: no I/O besides the request, no formatting.

An ``AsyncOpenAI`` (``max_retries=0``) is built per step on an explicit httpx2 client with
connection limits equal to the step's concurrency, on loadtest's HTTP/1.1 transport (``h1.py``)
or, with ``target.transport: aiohttp``, the SDK's aiohttp one (``DefaultAioHttpClient``). The SDK
supplies what makes a request valid for an endpoint (its auth and default headers, its base URL,
its HTTP client); the hot path then sends on that HTTP client a request built once per step from
them, reads the raw SSE bytes and parses only what a record needs.

Measured on the project's benchmark machine (README): the typed ``create()`` transforms every
request's params and builds a pydantic object per chunk (7.0 ms of client CPU per streamed
request); even the SDK's low-level ``post()`` rebuilds options and headers per request (0.83 ms
on aiohttp). The prebuilt request costs 0.36 ms on aiohttp and 0.26 ms on ``h1``. Errors never
escape: they become the record's ``status``/``error_class``.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aiohttp
import httpx2
import orjson
from openai import AsyncOpenAI

from loadtest.analysis.ratelimit import retry_after_s
from loadtest.analysis.records import RequestRecord
from loadtest.config.secrets import scrub, secret_values
from loadtest.transport.aiotrace import CURRENT_PHASES, aiohttp_transport
from loadtest.transport.apis import body_end_ns, body_reads, note_api, read_api
from loadtest.transport.bodies import RequestShape, request_body
from loadtest.transport.errors import root_cause
from loadtest.transport.h1 import H1Transport
from loadtest.transport.netconn import env_proxy_url, origin
from loadtest.transport.outputs import (
    Side,
    cached_tokens,
    delta_output,
    message_content,
    message_output,
    set_reasoning,
    track_calls,
)
from loadtest.transport.phases import PHASES_EXTENSION, Phases
from loadtest.transport.responses import StreamFailed
from loadtest.workload.prompts import PromptItem
from loadtest.workload.servertok import count_on_server
from loadtest.workload.tokens import count_tokens, token_source
from loadtest.workload.tools import ToolCall

__all__ = ["Endpoint", "classify_status", "make_endpoint", "send"]

_ERROR_TEXT_MAX = 200
_NS = time.perf_counter_ns
_T = TypeVar("_T")


@dataclass
class Endpoint:
    """The SDK client of a step and what the hot path reuses from it for every request."""

    sdk: AsyncOpenAI
    client: httpx2.AsyncClient  # the SDK's HTTP client: requests are sent on it directly
    urls: dict[str, httpx2.URL]  # api -> absolute URL, parsed once
    headers: httpx2.Headers  # the HTTP client's and the SDK's default headers, auth included
    timeout: dict[str, float | None]  # the request extension httpx2's transports read
    api_key: str
    secrets: tuple[str, ...] = ()  # never in an error text: the key, header values, the URL's credentials

    def request(self, api: str, body: bytes) -> httpx2.Request:
        """What ``client.build_request`` makes, without re-merging headers and re-parsing the URL each time."""
        return httpx2.Request(
            "POST", self.urls[api], headers=self.headers, content=body, extensions={"timeout": self.timeout}
        )

    async def close(self) -> None:
        await self.sdk.close()


def make_endpoint(
    base_url: str,
    api_key: str,
    *,
    max_connections: int,
    timeout_s: float,
    connect_timeout_s: float,
    idle_timeout_s: float | None = None,
    headers: dict[str, str] | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    stack: Literal["h1", "aiohttp"] = "h1",
    ssl_context: ssl.SSLContext | None = None,
    trust_env: bool = True,
) -> Endpoint:
    """An ``AsyncOpenAI`` that never retries, on an HTTP client sized to the step's concurrency.

    ``stack`` (``target.transport``): the HTTP transport under it: loadtest's own HTTP/1.1
    (``h1.py``) or the SDK's aiohttp one. ``transport`` replaces either (tests pass
    ``httpx2.MockTransport``). ``ssl_context``: how https is verified (``target.tls``);
    ``trust_env``: take proxies from the environment.
    """
    if transport is None:
        if stack == "h1":
            transport = H1Transport(max_connections=max_connections, ssl_context=ssl_context, trust_env=trust_env)
        else:
            proxy = env_proxy_url(*origin(base_url)) if trust_env else None
            transport = aiohttp_transport(max_connections=max_connections, ssl_context=ssl_context, proxy_url=proxy)
    # read = the per-read (idle) timeout: the longest silence while a response is awaited
    timeout = httpx2.Timeout(timeout_s, connect=connect_timeout_s, read=idle_timeout_s or timeout_s)
    client = httpx2.AsyncClient(
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        timeout=timeout,
        transport=transport,
        trust_env=False,  # the transports take proxies themselves
        follow_redirects=True,  # as the SDK's own clients do
    )
    sdk = AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        http_client=client,
        timeout=timeout,
        default_headers=headers or None,
    )
    base = httpx2.URL(base_url)  # a query (Azure's ?api-version=) stays after the API's path
    root = str(base.copy_with(query=None)).rstrip("/")
    hdrs = httpx2.Headers(client.headers)
    hdrs.update(sdk.auth_headers)
    # default_headers holds the SDK's sentinels (Omit) for headers it leaves out: keep real values only.
    hdrs.update({k: v for k, v in sdk.default_headers.items() if isinstance(v, str)})
    urls = {api: httpx2.URL(f"{root}/{path}", params=base.params) for api, path in _PATHS.items()}
    return Endpoint(sdk, client, urls, hdrs, timeout.as_dict(), api_key, secret_values(base_url, api_key, headers))


_PATHS = {"chat": "chat/completions", "completions": "completions"}
_PATHS.update(responses="responses", embeddings="embeddings")  # transport/apis.py


def classify_status(status: int) -> str:
    if status == 429:
        return "http_429"
    if status >= 500:
        return "http_5xx"
    return "http_4xx"


def _ratelimit(headers: httpx2.Headers) -> dict[str, str] | None:
    found = {k: v for k, v in headers.items() if k.startswith("x-ratelimit-")}
    return found or None


def _transport_error_class(root: BaseException, phases: Phases, *, got_status: bool) -> str:
    """Classify by the original error and by how far the request got.

    ``connect``: no connection (refused, DNS, connect timeout, a proxy refusing the tunnel);
    ``tls``: the TLS handshake failed (a certificate, a protocol mismatch); ``reset``: the
    connection was up and ended (reset or EOF) before the response's status line: an overloaded
    server, not an absent one; ``stream_broken``: it ended after the status line. The SDK's aiohttp
    wrapper maps every ``aiohttp.ClientConnectionError`` to ``ConnectTimeout``, so the exception
    type alone would mislabel a server hanging up as a refused connection."""
    if isinstance(root, ssl.SSLError | aiohttp.ClientSSLError) and not (got_status or phases.head):
        return "tls"
    if isinstance(
        root,
        aiohttp.ConnectionTimeoutError
        | aiohttp.ClientConnectorError
        | aiohttp.ClientProxyConnectionError
        | httpx2.ConnectError
        | httpx2.ConnectTimeout
        | httpx2.ProxyError
        | ConnectionRefusedError,
    ):
        return "connect"
    if isinstance(root, TimeoutError | asyncio.TimeoutError | httpx2.TimeoutException):
        return "timeout"
    if got_status or phases.head:
        return "stream_broken"
    return "reset" if phases.connected else "connect"


def _short(text: str, secrets: tuple[str, ...]) -> str:
    text = " ".join(scrub(text, secrets).split())
    return text if len(text) <= _ERROR_TEXT_MAX else text[: _ERROR_TEXT_MAX - 3] + "..."


def _fail(rec: RequestRecord, t0: int, error_class: str, text: str, secret: tuple[str, ...]) -> None:
    rec.end_ns = _NS() - t0
    rec.status = "error"
    rec.error_class = error_class
    rec.error = _short(text, secret)
    if rec.chunk_times_ns:  # a broken stream keeps the timing it got
        rec.first_token_ns, rec.last_token_ns = rec.chunk_times_ns[0], rec.chunk_times_ns[-1]


class _StreamError(StreamFailed):
    """The server sent an error object inside the stream."""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


if sys.version_info >= (3, 11):

    async def _with_deadline(coro: Awaitable[_T], seconds: float) -> _T:
        async with asyncio.timeout(seconds):
            return await coro
else:  # pragma: no cover - Python 3.10

    async def _with_deadline(coro: Awaitable[_T], seconds: float) -> _T:
        return await asyncio.wait_for(coro, seconds)


async def send(
    ep: Endpoint,
    rec: RequestRecord,
    item: PromptItem,
    *,
    model: str,
    api: Literal["chat", "completions", "responses", "embeddings"],
    stream: bool,
    extra_body: dict[str, Any] | None,
    t0: int,
    timeout_s: float,
    encoding: str = "o200k_base",
    headers: dict[str, str] | None = None,
    answer: list[str] | None = None,
    shape: RequestShape | None = None,
    calls: list[ToolCall] | None = None,
) -> RequestRecord:
    """Send one request and fill ``rec`` in place (so a cancelled request still leaves its times).
    ``headers``: added to this request only (a conversation's session id); ``answer``: gets the answer's
    text (its content) appended when the response is whole (a conversation's history); ``shape``: tools,
    image detail, embeddings format (bodies.py); ``calls`` receives the answer's tool calls."""
    rec.stream = stream and api != "embeddings"  # an embeddings response is one body
    note_api(rec, api, item, shape)
    secret = ep.secrets
    phases = Phases()
    found: dict[Any, ToolCall] = {}
    try:
        texts = await _with_deadline(
            _exchange(
                ep, rec, item, model, api, stream, extra_body, t0, encoding, phases, headers, answer, shape, found
            ),
            timeout_s,
        )
        if rec.tool_calls is not None:
            rec.tool_calls = len(found)
        if calls is not None:
            calls.extend(found.values())
        if texts is not None:  # counted by the endpoint, after the request (not in its latency)
            await _count_on_server(ep, rec, *texts)
    except (TimeoutError, asyncio.TimeoutError):  # the whole-request deadline
        _fail(rec, t0, "timeout", f"no complete response within {timeout_s:g} s", secret)
    except _HTTPError as e:
        _fail(rec, t0, classify_status(e.status), f"HTTP {e.status}: {e}", secret)
    except httpx2.TransportError as e:
        root = root_cause(e)
        kind = _transport_error_class(root, phases, got_status=rec.http_status is not None)
        _fail(rec, t0, kind, f"{root.__class__.__name__}: {root}", secret)
    except StreamFailed as e:
        _fail(rec, t0, "stream_error", f"error in stream: {e}", secret)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:  # orjson.JSONDecodeError included
        _fail(rec, t0, "bad_response", f"{e.__class__.__name__}: {e}", secret)
    except Exception as e:  # a request must never stop the run
        _fail(rec, t0, "client_error", f"{e.__class__.__name__}: {e}", secret)
    finally:
        _set_phases(rec, phases)
    return rec


def _set_phases(rec: RequestRecord, phases: Phases) -> None:
    d = phases.durations_ms()
    rec.queue_ms, rec.connect_ms, rec.tls_ms = d["queue_ms"], d["connect_ms"], d["tls_ms"]
    rec.request_ms, rec.ttfb_ms = d["request_ms"], d["ttfb_ms"]
    rec.new_connection = phases.new_connection if phases.slot else None


def _error_message(raw: bytes) -> str:
    try:
        err = orjson.loads(raw).get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    except (ValueError, AttributeError):
        pass
    return raw.decode("utf-8", "replace")


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


def _counts(
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


async def _count_on_server(ep: Endpoint, rec: RequestRecord, text: str, reasoning: str) -> None:
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


async def _exchange(
    ep: Endpoint,
    rec: RequestRecord,
    item: PromptItem,
    model: str,
    api: str,
    stream: bool,
    extra_body: dict[str, Any] | None,
    t0: int,
    encoding: str,
    phases: Phases,
    headers: dict[str, str] | None = None,
    answer: list[str] | None = None,
    shape: RequestShape | None = None,
    calls: dict[Any, ToolCall] | None = None,
) -> tuple[str, str] | None:
    """Fill ``rec`` from one exchange; returns the output and reasoning texts when the endpoint
    itself is to count them (``target.tokenizer: server``)."""
    request = ep.request(api, orjson.dumps(request_body(item, model, api, stream, extra_body, shape)))
    if headers:
        request.headers.update(headers)
    request.extensions[PHASES_EXTENSION] = phases
    CURRENT_PHASES.set(phases)  # for aiohttp's trace hooks, which run in this task
    phases.issued = _NS()  # "issued": TTFT and E2E count from here, a new connection's handshake inside
    rec.sent_ns = phases.issued - t0
    resp = await ep.client.send(request, stream=True)
    try:
        rec.http_status = resp.status_code
        rec.ratelimit = _ratelimit(resp.headers)
        if resp.status_code >= 400:
            rec.retry_after_s = retry_after_s(resp.headers)
            raise _HTTPError(resp.status_code, _error_message(await resp.aread()))
        calls = calls if calls is not None else {}
        if api in ("responses", "embeddings"):  # transport/apis.py
            out = await read_api(resp, rec, item, api, stream, t0, encoding, calls)
            return None if out is None else _counts(rec, out.usage, item, out.text, out.reasoning, encoding)
        read = _read_stream if stream else _read_whole
        return await read(resp, rec, item, api == "chat", t0, encoding, answer, calls)
    finally:
        await resp.aclose()


async def _read_whole(
    resp: httpx2.Response,
    rec: RequestRecord,
    item: PromptItem,
    chat: bool,
    t0: int,
    encoding: str,
    answer: list[str] | None,
    calls: dict[Any, ToolCall],
) -> tuple[str, str] | None:
    """A response that is not streamed: every token arrives with the last byte."""
    obj = orjson.loads(await resp.aread())
    rec.end_ns = rec.first_token_ns = rec.last_token_ns = body_end_ns(resp) - t0
    rec.first_answer_ns = rec.first_token_ns  # the reasoning came in the same body
    text, reasoning = message_output(obj, chat)
    if answer is not None:
        answer.append(message_content(obj, chat))
    if chat and obj.get("choices"):
        track_calls(calls, (obj["choices"][0].get("message") or {}).get("tool_calls"))
    return _counts(rec, obj.get("usage"), item, lambda: text, reasoning, encoding)


async def _read_stream(
    resp: httpx2.Response,
    rec: RequestRecord,
    item: PromptItem,
    chat: bool,
    t0: int,
    encoding: str,
    answer: list[str] | None,
    calls: dict[Any, ToolCall],
) -> tuple[str, str] | None:
    """A streamed response, event by event, each stamped with the read that carried it. (Long: the loop
    runs once per streamed event, so it stays in one piece, with the common case first.)"""
    loads = orjson.loads
    pieces: list[str] = []
    side = Side([], [], calls)
    answering = not chat  # completions: every piece is the answer
    times = rec.chunk_times_ns
    usage = None
    done = False
    tail = b""
    # An identity-encoded body is read straight from the transport's stream (httpx2's decoder and
    # chunker layers cost a few microseconds per chunk); a compressed one goes through aiter_bytes.
    # h1 stamps each read as it arrives (several events in one read share its time); otherwise
    # the time is taken as the piece reaches this loop
    chunks, arrival = body_reads(resp)
    async for raw in chunks:  # type: ignore[union-attr]
        t = (arrival.read_ns if arrival is not None else _NS()) - t0
        lines = (tail + raw).split(b"\n")
        tail = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                continue  # read to the end so the connection goes back to the pool
            obj = loads(data)
            choices = obj.get("choices")
            if obj.get("usage"):  # a usage-only chunk, or usage on the last content chunk (some servers)
                usage = obj["usage"]
            if not choices:
                _raise_stream_error(obj)
                continue
            c0 = choices[0]
            if chat:  # this runs once per streamed chunk: a lone content piece of the answer goes first
                delta = c0.get("delta")
                piece = delta.get("content") if delta else None
                if piece and answering and len(delta) == 1:
                    times.append(t)
                    pieces.append(piece)
                elif delta and delta_output(delta, t, rec, pieces, side):  # reasoning, tool calls, the rest
                    times.append(t)
                    answering = rec.first_answer_ns is not None
                continue
            piece = c0.get("text")
            if piece:
                times.append(t)
                pieces.append(piece)
    rec.end_ns = (arrival.read_ns if arrival is not None else _NS()) - t0
    if times:
        rec.first_token_ns, rec.last_token_ns = times[0], times[-1]
        if not chat:
            rec.first_answer_ns = times[0]
    if not done:
        raise httpx2.RemoteProtocolError("stream ended without [DONE]")
    if answer is not None:
        answer.append("".join(pieces))  # the content (chat) or text (completions), not reasoning
    return _counts(rec, usage, item, lambda: side.output(pieces), "".join(side.reasoning), encoding)


def _raise_stream_error(obj: dict[str, Any]) -> None:
    """An ``error`` object in the stream (a server failing mid-answer) fails the request."""
    if "error" in obj:
        err = obj["error"]
        raise _StreamError(err.get("message", "") if isinstance(err, dict) else str(err))
