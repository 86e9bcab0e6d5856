"""The mock's tokenizer and its tokenize routes, like the real servers'.

By default the mock counts a prompt's whitespace-separated words and generates words that are one
token each in tiktoken's encodings. With ``tokenizer`` (a Hugging Face ``tokenizer.json``) it
counts prompts with that tokenizer and generates words that are one token each in it, as a model
with a non-OpenAI tokenizer (Llama, Qwen) would: tiktoken then miscounts its answers.

Routes (``tokenize`` says which the mock serves, to stand in for one server or for all):
``POST /tokenize {"prompt", "add_special_tokens"=true}`` -> ``{"count", "max_model_len", "tokens"}``
(vLLM, SGLang); ``POST /tokenize {"content", "add_special"=false}`` -> ``{"tokens"}`` (llama-server,
which answers ``{"tokens": []}`` when ``content`` is missing); ``POST /extras/tokenize {"input"}`` ->
``{"tokens"}`` with the BOS token first (llama-cpp-python always adds it).
"""

from __future__ import annotations

import json
from typing import Any, get_args

from loadtest.config.mock import TokenizeMode
from loadtest.mock.inputs import prompt_texts

__all__ = ["TOKENIZE_MODES", "HFTokenizer", "tokenize_route", "words_encode"]

TOKENIZE_MODES: tuple[str, ...] = get_args(TokenizeMode)
_BOS = 1  # the default words' BOS id (its value matters to no one)
_MAX_MODEL_LEN = 32768


def words_encode(text: str, special: bool) -> list[int]:
    """The default mock's tokens: one per whitespace-separated word, a BOS first if asked."""
    return [_BOS] * special + [100 + i for i in range(len(text.split()))]


class HFTokenizer:
    """A ``tokenizer.json``: prompt counts, and the words the mock generates (one token each)."""

    def __init__(self, path: str) -> None:
        from loadtest.workload.hftok import hf_load  # the default mock never loads a tokenizer
        from loadtest.workload.synthetic import local_words

        self.tok = hf_load(path)
        self.words = local_words(path)

    def encode(self, text: str, special: bool) -> list[int]:
        return self.tok.encode(text, add_special_tokens=special).ids

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        """Tokens of the prompt text (each message's content), as the words count does: no template."""
        texts = prompt_texts(body)
        return sum(len(e.ids) for e in self.tok.encode_batch(texts, add_special_tokens=False)) if texts else 0

    def piece(self, i: int, k: int) -> str:
        """Text of token ``i`` of answer ``k``: a first word without a space (as servers detokenize a
        first token), then words after a space."""
        if i == 0:
            return self.words.first[k % len(self.words.first)]
        return " " + self.words.run[(k * 7 + i) % len(self.words.run)]


def _tokenize(path: str, body: dict[str, Any], mode: str, encode: Any) -> tuple[str, dict[str, Any]]:
    if path == "/extras/tokenize" and mode in ("all", "llama-cpp-python"):
        if not isinstance(body.get("input"), str):
            return "422 Unprocessable Entity", {"detail": [{"loc": ["body", "input"], "msg": "Field required"}]}
        return "200 OK", {"tokens": encode(body["input"], True)}
    if path != "/tokenize":
        return "404 Not Found", {"error": {"message": f"no route POST {path}"}}
    if mode in ("all", "vllm") and isinstance(body.get("prompt"), str):
        tokens = encode(body["prompt"], bool(body.get("add_special_tokens", True)))
        return "200 OK", {"count": len(tokens), "max_model_len": _MAX_MODEL_LEN, "tokens": tokens}
    if mode in ("all", "llama-server"):
        content = body.get("content")
        tokens = encode(content, bool(body.get("add_special", False))) if isinstance(content, str) else []
        return "200 OK", {"tokens": tokens}
    if mode == "vllm":
        return "400 Bad Request", {"error": {"message": "prompt: Field required", "type": "BadRequestError"}}
    return "404 Not Found", {"error": {"message": f"no route POST {path}"}}


def tokenize_route(path: str, raw: bytes, mode: str, encode: Any) -> tuple[str, bytes]:
    """(HTTP status line, JSON body) of a tokenize request, as the server ``mode`` names answers it."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return "400 Bad Request", b'{"error": {"message": "request body is not a JSON object"}}'
    status, payload = _tokenize(path, body, mode, encode)
    return status, json.dumps(payload).encode()
