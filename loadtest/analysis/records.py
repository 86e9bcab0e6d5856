"""The per-request record: what one request measured. One JSON object per line in requests.jsonl.

All ``*_ns`` times are ``time.perf_counter_ns()`` readings relative to the run's start (one clock);
wall time is recovered from the run's ``started_at`` anchor and is never used for latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import orjson

__all__ = ["RECORD_FIELDS", "RequestRecord", "record_from_json", "record_to_json"]


@dataclass(slots=True)
class RequestRecord:
    id: int
    step: int
    warmup: bool = False
    attempt: int = 1  # attempts of one request share its id
    final: bool = True  # the last attempt of its request (False: a retry followed)
    first_sent_ns: int | None = None  # when attempt 1 was sent (per-request latency = end - this)
    worker: int = 0
    stream: bool = True
    scheduled_ns: int | None = None  # due time in open-loop steps (lag = sent - scheduled)
    sent_ns: int = 0  # issued: handed to the HTTP client, before waiting for a connection (TTFT counts from here)
    first_token_ns: int | None = None  # first chunk carrying output of any kind (whole body when not streaming)
    last_token_ns: int | None = None
    end_ns: int = 0  # last byte of the response (or the moment the error was seen)
    chunk_times_ns: list[int] = field(default_factory=list)  # arrival of each output chunk (its count: the chunks)
    input_tokens: int | None = None
    output_tokens: int | None = None
    tokens_source: Literal["usage", "tiktoken", "hf", "server"] | None = None  # who counted: see README
    status: Literal["ok", "error"] = "ok"
    error_class: str | None = None  # http_429, http_5xx, http_4xx, timeout, connect, stream_broken, ...
    error: str | None = None  # short, never holds the API key
    http_status: int | None = None
    retry_after_s: float | None = None
    ratelimit: dict[str, str] | None = None  # x-ratelimit-* response headers
    # connection phases (phases.py), milliseconds; None where a phase did not happen
    queue_ms: float | None = None  # waiting for a connection slot
    connect_ms: float | None = None  # TCP (and a proxy's tunnel), new connections only
    tls_ms: float | None = None  # TLS handshake, new https connections only (aiohttp: inside connect_ms)
    request_ms: float | None = None  # writing the request
    ttfb_ms: float | None = None  # issued -> response headers read
    new_connection: bool | None = None  # None: the request never got a connection slot
    # first chunk of the answer: content or tool-call arguments, not reasoning (TTFA; = first_token_ns
    # without reasoning; whole body when not streaming)
    first_answer_ns: int | None = None
    reasoning_tokens: int | None = None  # of output_tokens: usage.completion_tokens_details, else counted
    group: int | None = None  # shared-prefix group of the prompt (workload.prompt.shared_prefix)
    cached_tokens: int | None = None  # of input_tokens: usage.prompt_tokens_details.cached_tokens (server's cache)
    # conversations (workload.sessions): which one (unique in a run), which turn of it (1, 2, ...), how
    # many turns it was to have, and the context sent (every message's tokens, by target.tokenizer)
    session: int | None = None
    turn: int | None = None
    session_turns: int | None = None
    context_tokens: int | None = None
    session_end: str | None = (
        None  # context: the conversation's last turn (its next prompt would exceed max_context_tokens)
    )
    # the APIs beyond chat (README "Other APIs"): None where they do not apply
    api: str | None = None  # chat | completions | responses | embeddings (None: a record from before it was kept)
    inputs: int | None = None  # embeddings: inputs in the request (the batch)
    images: int | None = None  # images in the prompt
    image_bytes: int | None = None  # their encoded (PNG/JPEG) bytes; base64 sends 4/3 of that
    tool_calls: int | None = None  # calls in the answer (0: answered without one) when tools were sent
    tool_round: int | None = None  # 1: the turn that answered the previous request's calls (workload.tool_result)


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
_KNOWN = frozenset(RECORD_FIELDS)  # a line's keys checked in O(1) each: records are read by the thousand


def record_to_json(r: RequestRecord) -> str:
    return orjson.dumps({name: getattr(r, name) for name in RECORD_FIELDS}).decode()


def record_from_json(line: str | bytes) -> RequestRecord:
    d: dict[str, Any] = orjson.loads(line)
    if d.keys() == _KNOWN:  # every field, as record_to_json writes them: positional, 4x faster than by name
        return RequestRecord(*[d[k] for k in RECORD_FIELDS])
    return RequestRecord(**{k: v for k, v in d.items() if k in _KNOWN})  # an older or newer version's line
