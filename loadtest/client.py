"""One request -> one RequestRecord. The hot path: no I/O besides the request, no formatting.

Requests go through ``AsyncOpenAI`` (its auth, headers, base URL and error mapping) with
``max_retries=0``, on the SDK's aiohttp transport (``DefaultAioHttpClient``), whose C HTTP parser
costs half the CPU per streamed request of the default httpx2 transport (measured: README). We
call the SDK's documented low-level ``client.post(path, cast_to=httpx2.Response)`` and ask for
the raw streamed body, then split SSE lines ourselves and parse only what a record needs: the
typed ``create()`` would transform every request's params and build a pydantic object per chunk.
Errors never escape: they become the record's ``status``/``error_class``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import aiohttp
import httpx2
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient

from .records import RequestRecord
from .tokens import count_tokens
from .workload import PromptItem

__all__ = ["classify_status", "make_client", "send"]

_ERROR_TEXT_MAX = 200
_NS = time.perf_counter_ns
# The SDK header (openai._constants.RAW_RESPONSE_HEADER) that returns the response unread, as a stream.
_SENT = "loadtest_sent_ns"
_RAW_STREAM = {"headers": {"X-Stainless-Raw-Response": "stream"}}


def make_client(
    base_url: str,
    api_key: str,
    *,
    max_connections: int,
    timeout_s: float,
    connect_timeout_s: float,
    headers: dict[str, str] | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> AsyncOpenAI:
    """An ``AsyncOpenAI`` that never retries, on an HTTP client sized to the step's concurrency.

    ``transport`` replaces the aiohttp transport (tests pass ``httpx2.MockTransport``).
    """
    http = DefaultAioHttpClient(
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        timeout=httpx2.Timeout(timeout_s, connect=connect_timeout_s),
        transport=transport,
        event_hooks={"request": [_stamp_sent]},
    )
    return AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        http_client=http,
        timeout=httpx2.Timeout(timeout_s, connect=connect_timeout_s),
        default_headers=headers or None,
    )


async def _stamp_sent(request: httpx2.Request) -> None:
    """ "Sent" is when the request reaches the HTTP transport: the SDK's own work to build it is
    client overhead (it shows up as schedule lag), not the endpoint's latency."""
    request.extensions[_SENT] = _NS()


def classify_status(status: int) -> str:
    if status == 429:
        return "http_429"
    if status >= 500:
        return "http_5xx"
    return "http_4xx"


def _retry_after(headers: httpx2.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _ratelimit(headers: httpx2.Headers) -> dict[str, str] | None:
    found = {k: v for k, v in headers.items() if k.startswith("x-ratelimit-")}
    return found or None


def _root_cause(exc: BaseException) -> BaseException:
    """The original exception under the SDK's and the transport's wrappers."""
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


if sys.version_info >= (3, 11):

    async def _with_deadline(coro: Awaitable[None], seconds: float) -> None:
        async with asyncio.timeout(seconds):
            await coro
else:  # pragma: no cover - Python 3.10

    async def _with_deadline(coro: Awaitable[None], seconds: float) -> None:
        await asyncio.wait_for(coro, seconds)


async def send(
    client: AsyncOpenAI,
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
    secret = client.api_key
    try:
        await _with_deadline(_exchange(client, rec, item, model, api, stream, extra_body, t0, encoding), timeout_s)
    except TimeoutError:  # asyncio.TimeoutError is TimeoutError from 3.11 on
        _fail(rec, t0, "timeout", f"no complete response within {timeout_s:g} s", secret)
    except asyncio.TimeoutError:  # pragma: no cover - Python 3.10
        _fail(rec, t0, "timeout", f"no complete response within {timeout_s:g} s", secret)
    except openai.APIStatusError as e:
        _fail(rec, t0, classify_status(e.status_code), f"HTTP {e.status_code}: {e.message}", secret)
        rec.http_status = e.status_code
        rec.retry_after_s = _retry_after(e.response.headers)
        rec.ratelimit = _ratelimit(e.response.headers)
    except (openai.APIConnectionError, httpx2.TransportError) as e:  # APITimeoutError included
        root = _root_cause(e)
        _fail(
            rec,
            t0,
            _transport_error_class(root, started=rec.http_status is not None),
            f"{root.__class__.__name__}: {root}",
            secret,
        )
    except _StreamError as e:
        _fail(rec, t0, "stream_error", f"error in stream: {e}", secret)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        _fail(rec, t0, "bad_response", f"{e.__class__.__name__}: {e}", secret)
    except Exception as e:  # a request must never stop the run
        _fail(rec, t0, "client_error", f"{e.__class__.__name__}: {e}", secret)
    return rec


def _body(
    item: PromptItem, model: str, api: str, stream: bool, extra_body: dict[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"model": model, "max_tokens": item.max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if api == "chat":
        body["messages"] = item.messages
        path = "/chat/completions"
    else:
        body["prompt"] = item.prompt
        path = "/completions"
    if extra_body:
        body.update(extra_body)
    return path, body


def _content(obj: dict[str, Any], chat: bool) -> str | None:
    choices = obj.get("choices")
    if not choices:
        return None
    c = choices[0]
    if chat:
        delta = c.get("delta") or c.get("message") or {}
        return delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
    return c.get("text")


def _set_tokens(
    rec: RequestRecord, usage: dict[str, Any] | None, item: PromptItem, text: Callable[[], str], encoding: str
) -> None:
    if usage and usage.get("completion_tokens") is not None:
        rec.tokens_source = "usage"
        rec.input_tokens = usage.get("prompt_tokens")
        rec.output_tokens = usage.get("completion_tokens")
        return
    rec.tokens_source = "tiktoken"
    rec.output_tokens = count_tokens(text(), encoding)
    if item.input_tokens is not None:
        rec.input_tokens = item.input_tokens
    elif item.messages is not None:
        rec.input_tokens = count_tokens("\n".join(str(m.get("content", "")) for m in item.messages), encoding)


async def _exchange(
    client: AsyncOpenAI,
    rec: RequestRecord,
    item: PromptItem,
    model: str,
    api: str,
    stream: bool,
    extra_body: dict[str, Any] | None,
    t0: int,
    encoding: str,
) -> None:
    chat = api == "chat"
    loads = json.loads
    path, body = _body(item, model, api, stream, extra_body)
    rec.sent_ns = _NS() - t0  # refined below to the moment the transport got the request
    resp: httpx2.Response = await client.post(path, body=body, cast_to=httpx2.Response, options=_RAW_STREAM)
    try:
        rec.sent_ns = resp.request.extensions.get(_SENT, rec.sent_ns + t0) - t0
        rec.http_status = resp.status_code
        rec.ratelimit = _ratelimit(resp.headers)
        if not stream:
            obj = loads(await resp.aread())
            rec.end_ns = rec.first_token_ns = rec.last_token_ns = _NS() - t0
            content = _content(obj, chat) or ""
            _set_tokens(rec, obj.get("usage"), item, lambda: content, encoding)
            return
        pieces: list[str] = []
        times = rec.chunk_times_ns
        usage = None
        done = False
        tail = b""
        async for raw in resp.aiter_bytes():  # decoded: a server may gzip its stream
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
                if obj.get("usage"):
                    usage = obj["usage"]
                if "error" in obj and not obj.get("choices"):
                    err = obj["error"]
                    raise _StreamError(err.get("message", "") if isinstance(err, dict) else str(err))
                piece = _content(obj, chat)
                if piece:
                    times.append(t)
                    pieces.append(piece)
        rec.end_ns = _NS() - t0
        if times:
            rec.first_token_ns, rec.last_token_ns = times[0], times[-1]
        if not done:
            raise httpx2.RemoteProtocolError("stream ended without [DONE]")
        _set_tokens(rec, usage, item, lambda: "".join(pieces), encoding)
    finally:
        await resp.aclose()
