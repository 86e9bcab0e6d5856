"""``POST /v1/embeddings``: one embedding per input, as OpenAI answers.

``input`` is a text, a list of texts, a list of token ids or a list of such lists (at most 2,048
inputs, else 400). ``data`` lists the embeddings in input order; each is a unit vector of
``dimensions`` (default 1536, text-embedding-3-small's) chosen by a hash of its input, sent as a JSON
list of floats (``encoding_format: float``, the API's default) or as base64 of little-endian float32
(``base64``, what the openai SDK asks for when the caller does not say). ``usage`` counts the inputs'
tokens (``prompt_tokens`` = ``total_tokens``). The answer comes ``ttft_ms`` plus
``embed_ms_per_1k_tokens`` per 1,000 input tokens after the request got its slot.
"""

from __future__ import annotations

import base64
import functools
import json
import zlib
from typing import Any

import numpy as np
import orjson

from loadtest.mock.completion import Conn, send_whole
from loadtest.mock.state import MockState
from loadtest.mock.wire import error, now

__all__ = ["MAX_INPUTS", "embed", "embeddings_answer", "embeddings_inputs", "warm"]

MAX_INPUTS = 2048
_DIMS = 1536
_VECTORS = 16  # distinct vectors: the answer is a lookup, never a cost that could limit the benchmark


@functools.cache
def _vectors(dims: int, fmt: str) -> tuple[bytes, ...]:
    """Each vector's JSON value, encoded once per dimensions and format."""
    k = np.arange(_VECTORS * dims, dtype=np.float64).reshape(_VECTORS, dims)
    v = np.sin(k * 0.6180339887 + k * k * 1e-7).astype(np.float32)  # deterministic, no RNG to load
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    if fmt == "base64":
        return tuple(json.dumps(base64.b64encode(row.astype("<f4").tobytes()).decode()).encode() for row in v)
    return tuple(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) for row in v)  # ~10 characters a float


def warm() -> None:
    """Encode the default vectors before the first request (tens of ms), so no answer pays for it."""
    for fmt in ("float", "base64"):
        _vectors(_DIMS, fmt)


def embeddings_inputs(body: dict[str, Any]) -> list[str | list[int]] | bytes:
    """The request's inputs, or the 400 answer for a request that has none, too many or a wrong kind."""
    x = body.get("input")
    if isinstance(x, str) or (isinstance(x, list) and x and all(isinstance(t, int) for t in x)):
        return [x]
    if not isinstance(x, list) or not x:
        return error("400 Bad Request", "input: expected a string, a list of strings or of token lists")
    if len(x) > MAX_INPUTS:
        return error("400 Bad Request", f"input: at most {MAX_INPUTS} inputs per request, got {len(x)}")
    if not all(isinstance(t, str) or (isinstance(t, list) and all(isinstance(i, int) for i in t)) for t in x):
        return error("400 Bad Request", "input: expected a string, a list of strings or of token lists")
    return x


def embeddings_answer(body: dict[str, Any], inputs: list[str | list[int]], tokens: int) -> bytes | None:
    """The JSON body of the answer (None: a format or dimensions the mock does not serve)."""
    fmt = body.get("encoding_format") or "float"
    dims = body.get("dimensions") or _DIMS
    if fmt not in ("float", "base64") or not isinstance(dims, int) or not 1 <= dims <= 3072:
        return None
    table = _vectors(dims, fmt)
    rows = [
        b'{"object":"embedding","index":%d,"embedding":%s}' % (i, table[zlib.crc32(json.dumps(x).encode()) % _VECTORS])
        for i, x in enumerate(inputs)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    tail = f'],"model":{json.dumps(str(body.get("model", "mock-model")))},"usage":{json.dumps(usage)}}}'
    return b'{"object":"list","data":[' + b",".join(rows) + tail.encode()


async def embed(conn: Conn, state: MockState, body: dict[str, Any], close: bool, fault: str | None) -> None:
    """Answer one embeddings request (its inputs already checked by ``embeddings_inputs``)."""
    start = now()
    inputs = embeddings_inputs(body)
    assert not isinstance(inputs, bytes)
    tokens = state.prompt_tokens(body) + sum(len(x) for x in inputs if isinstance(x, list))
    out = embeddings_answer(body, inputs, tokens)
    if out is None:
        conn.send(error("400 Bad Request", "encoding_format: float or base64; dimensions: 1..3072"), close)
        return
    state.apis.embedding_inputs += len(inputs)
    state.apis.embedding_tokens += tokens
    due = start + state.gap(state.config.ttft_ms) + state.config.embed_ms_per_1k_tokens * tokens / 1e6
    await send_whole(conn, state, out, due, start, close, fault)
