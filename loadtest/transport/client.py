"""One request -> one RequestRecord. The hot path: no I/O besides the request, no formatting.

The request is built from the step's ``Endpoint`` (``endpoint.py``: the SDK bridge) and sent on the
SDK's HTTP client; the raw SSE bytes are read and only what a record needs is parsed. Token counts
come from ``counting.py``; a failure becomes the record's ``status``/``error_class`` (``failures.py``).

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
from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

import httpx2
import orjson

from loadtest.analysis.ratelimit import retry_after_s
from loadtest.analysis.records import RequestRecord
from loadtest.transport.aiotrace import CURRENT_PHASES
from loadtest.transport.apis import body_end_ns, body_reads, note_api, read_api
from loadtest.transport.bodies import RequestShape, request_body
from loadtest.transport.counting import count_on_endpoint, counts
from loadtest.transport.endpoint import Endpoint, make_endpoint
from loadtest.transport.errors import root_cause
from loadtest.transport.failures import (
    HTTPError,
    StreamError,
    classify_status,
    error_message,
    fail,
    ratelimit_headers,
    transport_error_class,
)
from loadtest.transport.outputs import Side, delta_output, message_content, message_output, track_calls
from loadtest.transport.phases import PHASES_EXTENSION, Phases
from loadtest.transport.responses import StreamFailed
from loadtest.workload.prompts import PromptItem
from loadtest.workload.tools import ToolCall

__all__ = ["Endpoint", "classify_status", "make_endpoint", "send"]  # Endpoint and make_endpoint: endpoint.py

_NS = time.perf_counter_ns
_T = TypeVar("_T")


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
            await count_on_endpoint(ep, rec, *texts)
    except (TimeoutError, asyncio.TimeoutError):  # the whole-request deadline
        fail(rec, t0, "timeout", f"no complete response within {timeout_s:g} s", secret)
    except HTTPError as e:
        fail(rec, t0, classify_status(e.status), f"HTTP {e.status}: {e}", secret)
    except httpx2.TransportError as e:
        root = root_cause(e)
        kind = transport_error_class(root, phases, got_status=rec.http_status is not None)
        fail(rec, t0, kind, f"{root.__class__.__name__}: {root}", secret)
    except StreamFailed as e:
        fail(rec, t0, "stream_error", f"error in stream: {e}", secret)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:  # orjson.JSONDecodeError included
        fail(rec, t0, "bad_response", f"{e.__class__.__name__}: {e}", secret)
    except Exception as e:  # a request must never stop the run
        fail(rec, t0, "client_error", f"{e.__class__.__name__}: {e}", secret)
    finally:
        _set_phases(rec, phases)
    return rec


def _set_phases(rec: RequestRecord, phases: Phases) -> None:
    d = phases.durations_ms()
    rec.queue_ms, rec.connect_ms, rec.tls_ms = d["queue_ms"], d["connect_ms"], d["tls_ms"]
    rec.request_ms, rec.ttfb_ms = d["request_ms"], d["ttfb_ms"]
    rec.new_connection = phases.new_connection if phases.slot else None


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
        rec.ratelimit = ratelimit_headers(resp.headers)
        if resp.status_code >= 400:
            rec.retry_after_s = retry_after_s(resp.headers)
            raise HTTPError(resp.status_code, error_message(await resp.aread()))
        calls = calls if calls is not None else {}
        if api in ("responses", "embeddings"):  # transport/apis.py
            out = await read_api(resp, rec, item, api, stream, t0, encoding, calls)
            if out is not None and answer is not None:
                answer.append(out.answer())
            return None if out is None else counts(rec, out.usage, item, out.text, out.reasoning, encoding)
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
    return counts(rec, obj.get("usage"), item, lambda: text, reasoning, encoding)


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
    return counts(rec, usage, item, lambda: side.output(pieces), "".join(side.reasoning), encoding)


def _raise_stream_error(obj: dict[str, Any]) -> None:
    """An ``error`` object in the stream (a server failing mid-answer) fails the request."""
    if "error" in obj:
        err = obj["error"]
        raise StreamError(err.get("message", "") if isinstance(err, dict) else str(err))
