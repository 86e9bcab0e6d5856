"""The request path's part for the APIs beyond chat and completions: what a record keeps of the API,
and reading a Responses answer (``responses.py``) or an embeddings one (``embeddings.py``).

The output these return is counted by ``client.py`` as every API's is (usage, else the tokenizer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson

from loadtest.analysis.records import RequestRecord
from loadtest.transport.bodies import RequestShape
from loadtest.transport.embeddings import read_embeddings
from loadtest.transport.h1 import BODY_EXTENSION, H1Body
from loadtest.transport.outputs import Side
from loadtest.transport.responses import read_events, response_output
from loadtest.workload.prompts import PromptItem
from loadtest.workload.tools import ToolCall

__all__ = ["Output", "body_reads", "note_api", "read_api"]

_NS = time.perf_counter_ns


@dataclass(frozen=True, slots=True)
class Output:
    usage: dict[str, Any] | None  # in chat's names
    text: Callable[[], str]  # every output text (reasoning, answer, call arguments)
    reasoning: str


def note_api(rec: RequestRecord, api: str, item: PromptItem, shape: RequestShape | None) -> None:
    """What the record keeps of the API: its name, the images sent, whether tools could be called."""
    rec.api = api
    if item.images:
        rec.images, rec.image_bytes = len(item.images), sum(im.nbytes for im in item.images)
    rec.tool_calls = 0 if shape is not None and shape.tools else None


def body_reads(resp: httpx2.Response) -> tuple[Any, H1Body | None]:
    """The body's reads and, on h1, the body whose ``read_ns`` stamps each read at its arrival (as
    ``client._read_stream`` takes them)."""
    encoding_hdr = resp.headers.get("content-encoding", "identity").lower()
    h1_body = resp.extensions.get(BODY_EXTENSION)  # resp.stream is httpx2's wrapper around it
    chunks = (h1_body or resp.stream) if encoding_hdr == "identity" else resp.aiter_bytes()
    return chunks, chunks if isinstance(chunks, H1Body) else None


def body_end_ns(resp: httpx2.Response) -> int:
    """When a whole body's last byte was read: h1's stamp of its last read, else now."""
    body = resp.extensions.get(BODY_EXTENSION)  # resp.stream is httpx2's wrapper around h1's body
    return body.read_ns if isinstance(body, H1Body) else _NS()


async def read_api(
    resp: httpx2.Response,
    rec: RequestRecord,
    item: PromptItem,
    api: str,
    stream: bool,
    t0: int,
    encoding: str,
    calls: dict[Any, ToolCall],
) -> Output | None:
    """Fill ``rec`` from a Responses answer (streamed or whole) or an embeddings one; the output to
    count (None for embeddings: nothing is generated)."""
    if api == "responses" and stream:
        pieces: list[str] = []
        side = Side([], [], calls)
        usage = await read_events(*body_reads(resp), rec, t0, pieces, side)
        return Output(usage, lambda: side.output(pieces), "".join(side.reasoning))
    obj = orjson.loads(await resp.aread())
    rec.end_ns = body_end_ns(resp) - t0
    if api == "embeddings":
        read_embeddings(obj, rec, item, encoding)
        return None
    rec.first_token_ns = rec.last_token_ns = rec.first_answer_ns = rec.end_ns  # every token with the last byte
    text, reasoning, usage = response_output(obj, calls)
    return Output(usage, lambda: text, reasoning)
