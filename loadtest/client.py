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
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import httpx2
import orjson
from openai import AsyncOpenAI, DefaultAioHttpClient

from .h1 import SENT_EXTENSION, H1Transport
from .ratelimit import retry_after_s
from .records import RequestRecord
from .servertok import count_on_server
from .tokens import count_tokens, token_source
from .workload import PromptItem

__all__ = ["Endpoint", "classify_status", "make_endpoint", "send"]

_ERROR_TEXT_MAX = 200
_NS = time.perf_counter_ns
_SENT = SENT_EXTENSION


@dataclass
class Endpoint:
    """The SDK client of a step and what the hot path reuses from it for every request."""

    sdk: AsyncOpenAI
    http: httpx2.AsyncClient
    urls: dict[str, httpx2.URL]  # api -> absolute URL, parsed once
    headers: httpx2.Headers  # the HTTP client's and the SDK's default headers, auth included
    timeout: dict[str, float | None]  # the request extension httpx2's transports read
    api_key: str

    def request(self, api: str, body: bytes) -> httpx2.Request:
        """What ``http.build_request`` makes, without re-merging headers and re-parsing the URL each time."""
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
    http: Literal["h1", "aiohttp"] = "h1",
) -> Endpoint:
    """An ``AsyncOpenAI`` that never retries, on an HTTP client sized to the step's concurrency.

    ``http``: the transport under it: loadtest's own HTTP/1.1 (``h1.py``) or the SDK's aiohttp
    one. ``transport`` replaces either (tests pass ``httpx2.MockTransport``).
    """
    if transport is None and http == "h1":
        transport = H1Transport(max_connections=max_connections)
    # read = the per-read (idle) timeout: the longest silence while a response is awaited
    timeout = httpx2.Timeout(timeout_s, connect=connect_timeout_s, read=idle_timeout_s or timeout_s)
    http = DefaultAioHttpClient(
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        timeout=timeout,
        transport=transport,
        event_hooks={"request": [_stamp_sent]},
    )
    sdk = AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        http_client=http,
        timeout=timeout,
        default_headers=headers or None,
    )
    root = str(sdk.base_url).rstrip("/")
    hdrs = httpx2.Headers(http.headers)
    hdrs.update(sdk.auth_headers)
    # default_headers holds the SDK's sentinels (Omit) for headers it leaves out: keep real values only.
    hdrs.update({k: v for k, v in sdk.default_headers.items() if isinstance(v, str)})
    urls = {"chat": httpx2.URL(f"{root}/chat/completions"), "completions": httpx2.URL(f"{root}/completions")}
    return Endpoint(sdk, http, urls, hdrs, timeout.as_dict(), api_key)


async def _stamp_sent(request: httpx2.Request) -> None:
    """ "Sent" is when the request reaches the HTTP transport: the work to build it is client
    overhead (it shows up as schedule lag), not the endpoint's latency."""
    request.extensions[_SENT] = _NS()


def classify_status(status: int) -> str:
    if status == 429:
        return "http_429"
    if status >= 500:
        return "http_5xx"
    return "http_4xx"


def _ratelimit(headers: httpx2.Headers) -> dict[str, str] | None:
    found = {k: v for k, v in headers.items() if k.startswith("x-ratelimit-")}
    return found or None


def _root_cause(exc: BaseException) -> BaseException:
    """The original exception under the transport's wrappers."""
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


def _transport_error_class(root: BaseException, *, started: bool) -> str:
    """Classify by the original error: the SDK's aiohttp wrapper maps every
    ``aiohttp.ClientConnectionError`` (a refused connection, a server hanging up mid-stream) to
    ``ConnectTimeout``, so its exception type alone would mislabel both."""
    if isinstance(
        root,
        aiohttp.ConnectionTimeoutError
        | aiohttp.ClientConnectorError
        | httpx2.ConnectError
        | httpx2.ConnectTimeout
        | ConnectionRefusedError,
    ):
        return "connect"
    if isinstance(root, TimeoutError | asyncio.TimeoutError | httpx2.TimeoutException):
        return "timeout"
    return "stream_broken" if started else "connect"


def _short(text: str, secret: str) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_TEXT_MAX else text[: _ERROR_TEXT_MAX - 3] + "..."


def _fail(rec: RequestRecord, t0: int, error_class: str, text: str, secret: str) -> None:
    rec.end_ns = _NS() - t0
    rec.status = "error"
    rec.error_class = error_class
    rec.error = _short(text, secret)
    if rec.chunk_times_ns:  # a broken stream keeps the timing it got
        rec.first_token_ns, rec.last_token_ns = rec.chunk_times_ns[0], rec.chunk_times_ns[-1]


class _StreamError(Exception):
    """The server sent an error object inside the stream."""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


if sys.version_info >= (3, 11):

    async def _with_deadline(coro: Awaitable[str | None], seconds: float) -> str | None:
        async with asyncio.timeout(seconds):
            return await coro
else:  # pragma: no cover - Python 3.10

    async def _with_deadline(coro: Awaitable[str | None], seconds: float) -> str | None:
        return await asyncio.wait_for(coro, seconds)


async def send(
    ep: Endpoint,
    rec: RequestRecord,
    item: PromptItem,
    *,
    model: str,
    api: Literal["chat", "completions"],
    stream: bool,
    extra_body: dict[str, Any] | None,
    t0: int,
    timeout_s: float,
    encoding: str = "o200k_base",
) -> RequestRecord:
    """Send one request and fill ``rec`` in place (so a cancelled request still leaves its times)."""
    rec.stream = stream
    secret = ep.api_key
    try:
        text = await _with_deadline(_exchange(ep, rec, item, model, api, stream, extra_body, t0, encoding), timeout_s)
        if text is not None:  # counted by the endpoint, after the request (not in its latency)
            await _count_on_server(ep, rec, text)
    except (TimeoutError, asyncio.TimeoutError):  # the whole-request deadline
        _fail(rec, t0, "timeout", f"no complete response within {timeout_s:g} s", secret)
    except _HTTPError as e:
        _fail(rec, t0, classify_status(e.status), f"HTTP {e.status}: {e}", secret)
    except httpx2.TransportError as e:
        root = _root_cause(e)
        started = rec.http_status is not None
        _fail(rec, t0, _transport_error_class(root, started=started), f"{root.__class__.__name__}: {root}", secret)
    except _StreamError as e:
        _fail(rec, t0, "stream_error", f"error in stream: {e}", secret)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:  # orjson.JSONDecodeError included
        _fail(rec, t0, "bad_response", f"{e.__class__.__name__}: {e}", secret)
    except Exception as e:  # a request must never stop the run
        _fail(rec, t0, "client_error", f"{e.__class__.__name__}: {e}", secret)
    return rec


def _body(item: PromptItem, model: str, api: str, stream: bool, extra_body: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": item.max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if api == "chat":
        body["messages"] = item.messages
    else:
        body["prompt"] = item.prompt
    if extra_body:
        body.update(extra_body)
    return body


def _content(obj: dict[str, Any], chat: bool) -> str | None:
    choices = obj.get("choices")
    if not choices:
        return None
    c = choices[0]
    if chat:
        delta = c.get("delta") or c.get("message") or {}
        return delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
    return c.get("text")


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
        rec.input_tokens = count_tokens("\n".join(str(m.get("content", "")) for m in item.messages), encoding)
    if rec.tokens_source == "server":
        return text()
    rec.output_tokens = count_tokens(text(), encoding)
    return None


async def _count_on_server(ep: Endpoint, rec: RequestRecord, text: str) -> None:
    """The endpoint's count of the output; if its tokenize route fails, tiktoken's (and the record says so)."""
    n = await count_on_server(ep.http, ep.headers, ep.timeout, str(ep.sdk.base_url), text) if text else 0
    if n is None:
        rec.tokens_source, n = "tiktoken", count_tokens(text)
    rec.output_tokens = n


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
) -> str | None:
    chat = api == "chat"
    loads = orjson.loads
    request = ep.request(api, orjson.dumps(_body(item, model, api, stream, extra_body)))
    rec.sent_ns = _NS() - t0  # refined below to the moment the transport got the request
    resp = await ep.http.send(request, stream=True)
    try:
        rec.sent_ns = request.extensions.get(_SENT, rec.sent_ns + t0) - t0
        rec.http_status = resp.status_code
        rec.ratelimit = _ratelimit(resp.headers)
        if resp.status_code >= 400:
            rec.retry_after_s = retry_after_s(resp.headers)
            raise _HTTPError(resp.status_code, _error_message(await resp.aread()))
        if not stream:
            obj = loads(await resp.aread())
            rec.end_ns = rec.first_token_ns = rec.last_token_ns = _NS() - t0
            content = _content(obj, chat) or ""
            return _set_tokens(rec, obj.get("usage"), item, lambda: content, encoding)
        pieces: list[str] = []
        times = rec.chunk_times_ns
        usage = None
        done = False
        tail = b""
        # An identity-encoded body is read straight from the transport's stream (httpx2's decoder and
        # chunker layers cost a few microseconds per chunk); a compressed one goes through aiter_bytes.
        encoding_hdr = resp.headers.get("content-encoding", "identity").lower()
        chunks = resp.stream if encoding_hdr == "identity" else resp.aiter_bytes()
        async for raw in chunks:  # type: ignore[union-attr]
            t = _NS() - t0  # every event of this read arrived together
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
                if not choices:
                    if obj.get("usage"):
                        usage = obj["usage"]
                    if "error" in obj:
                        err = obj["error"]
                        raise _StreamError(err.get("message", "") if isinstance(err, dict) else str(err))
                    continue
                if obj.get("usage"):  # some servers put usage on the last content chunk
                    usage = obj["usage"]
                c0 = choices[0]
                if chat:  # inline _content(): this runs once per streamed token
                    delta = c0.get("delta")
                    piece = delta and (delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"))
                else:
                    piece = c0.get("text")
                if piece:
                    times.append(t)
                    pieces.append(piece)
        rec.end_ns = _NS() - t0
        if times:
            rec.first_token_ns, rec.last_token_ns = times[0], times[-1]
        if not done:
            raise httpx2.RemoteProtocolError("stream ended without [DONE]")
        return _set_tokens(rec, usage, item, lambda: "".join(pieces), encoding)
    finally:
        await resp.aclose()
