"""``target.tokenizer: server``: count tokens with the endpoint's own tokenize route.

Tried in this order, at the server's root (``base_url`` without its ``/v1``), until one answers
with a non-empty token list for a probe text:

1. ``POST /tokenize {"model", "prompt", "add_special_tokens": false}`` -> ``{"tokens", "count", ...}``
   (vLLM, SGLang);
2. ``POST /tokenize {"content", "add_special": false}`` -> ``{"tokens"}`` (llama.cpp's ``llama-server``;
   it answers shape 1 with an empty list, which is why the list must not be empty);
3. ``POST /extras/tokenize {"input", "model"}`` -> ``{"tokens"}`` (llama-cpp-python's server, which
   always adds the BOS token: the count of an empty text is subtracted from every count).

Requests carry the endpoint's auth and ``target.headers``; nothing of them reaches an error message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson

from loadtest.config.tls import default_context
from loadtest.workload.tokens import TokenizerError

__all__ = ["SHAPES", "ServerCounter", "Shape", "count_on_server", "probed", "server_root"]

_PROBE = "hello world"


@dataclass(frozen=True)
class Shape:
    label: str  # what answered, as the run reports it
    path: str
    body: Callable[[str, str], dict[str, Any]]  # (text, model) -> request body


SHAPES = (
    Shape(
        "POST /tokenize (vLLM/SGLang)", "/tokenize", lambda t, m: {"model": m, "prompt": t, "add_special_tokens": False}
    ),
    Shape("POST /tokenize (llama-server)", "/tokenize", lambda t, m: {"content": t, "add_special": False}),
    Shape("POST /extras/tokenize (llama-cpp-python)", "/extras/tokenize", lambda t, m: {"input": t, "model": m}),
)


@dataclass(frozen=True)
class Probed:
    root: str
    model: str
    shape: Shape
    overhead: int  # tokens the route adds to any text (a BOS), subtracted from its counts


_PROBED: dict[str, Probed] = {}  # by server root: what this process found (prompt building probes first)


def server_root(base_url: str) -> str:
    """Where the tokenize routes live: the server's root, not under ``/v1``."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def probed(base_url: str) -> Probed | None:
    return _PROBED.get(server_root(base_url))


def _tokens(resp: httpx2.Response) -> list[Any] | None:
    if resp.status_code != 200:
        return None
    try:
        tokens = orjson.loads(resp.content).get("tokens")
    except (ValueError, AttributeError):
        return None
    return tokens if isinstance(tokens, list) else None


class ServerCounter:
    """Counts through the endpoint, synchronously (while prompts are built, before the run)."""

    source = "server"

    def __init__(self, base_url: str, model: str, headers: dict[str, str], timeout_s: float) -> None:
        self.root = server_root(base_url)
        self.http = httpx2.Client(
            headers={**headers, "content-type": "application/json"}, timeout=timeout_s, verify=default_context()
        )
        self.probe = self._probe(model)
        _PROBED[self.root] = self.probe

    def _post(self, shape: Shape, text: str, model: str) -> list[Any] | None:
        try:
            resp = self.http.post(self.root + shape.path, content=orjson.dumps(shape.body(text, model)))
        except httpx2.HTTPError as e:
            raise TokenizerError(
                f"target.tokenizer: server: cannot reach {self.root}{shape.path} ({e.__class__.__name__})"
            ) from None
        return _tokens(resp)

    def _probe(self, model: str) -> Probed:
        for shape in SHAPES:
            if self._post(shape, _PROBE, model):  # answered, with tokens
                empty = self._post(shape, "", model)
                return Probed(self.root, model, shape, len(empty) if empty is not None else 0)
        tried = ", ".join(s.label for s in SHAPES)
        raise TokenizerError(f"target.tokenizer: server: no tokenize route answered at {self.root} (tried {tried})")

    @property
    def label(self) -> str:
        return self.probe.shape.label

    def count(self, text: str) -> int:
        tokens = self._post(self.probe.shape, text, self.probe.model)
        if tokens is None:
            raise TokenizerError(f"target.tokenizer: server: {self.root}{self.probe.shape.path} stopped answering")
        return len(tokens) - self.probe.overhead

    def close(self) -> None:
        self.http.close()


async def count_on_server(
    http: httpx2.AsyncClient, headers: httpx2.Headers, timeout: dict[str, float | None], base_url: str, text: str
) -> int | None:
    """Tokens of ``text`` by the endpoint's route found at probe time; None when that fails."""
    p = probed(base_url)
    if p is None:
        return None
    request = httpx2.Request(
        "POST",
        p.root + p.shape.path,
        headers={**headers, "content-type": "application/json"},
        content=orjson.dumps(p.shape.body(text, p.model)),
        extensions={"timeout": timeout},
    )
    try:
        resp = await http.send(request)
    except httpx2.HTTPError:
        return None
    tokens = _tokens(resp)
    return None if tokens is None else len(tokens) - p.overhead
