"""Hugging Face tokenizers (a ``tokenizer.json``), found on disk and never downloaded.

``target.tokenizer`` names one as a file (or a folder holding ``tokenizer.json``) or as a model
id (``org/name``) already in the local Hugging Face cache: ``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, laid out as
``models--org--name/snapshots/<commit>/tokenizer.json`` with ``refs/main`` naming the commit.
The file is loaded with the ``tokenizers`` library (Rust); nothing here touches the network.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["hf_cache_dir", "hf_count", "hf_count_many", "hf_find", "hf_load", "hf_vocab_words"]

_WORD = re.compile(r"[a-z]{3,9}")


def hf_cache_dir() -> Path:
    """Where Hugging Face keeps downloaded models (the variables huggingface_hub reads)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "huggingface" / "hub"


def _in_cache(model_id: str) -> Path | None:
    """``tokenizer.json`` of ``model_id`` in the local cache: the snapshot ``refs/main`` names, else the newest."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model_id) or ".." in model_id:
        return None
    repo = hf_cache_dir() / ("models--" + model_id.replace("/", "--"))
    try:
        main = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        main = ""
    if main and (repo / "snapshots" / main / "tokenizer.json").is_file():
        return repo / "snapshots" / main / "tokenizer.json"
    found = sorted((repo / "snapshots").glob("*/tokenizer.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def hf_find(value: str) -> Path | None:
    """The ``tokenizer.json`` that ``value`` names (a file, a folder holding one, or a cached model id)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    return _in_cache(value)


@cache
def hf_load(value: str) -> Tokenizer:
    """Load the tokenizer ``value`` names; ``ValueError`` with a short reason when it cannot."""
    from tokenizers import Tokenizer  # only runs that use one pay for the import

    path = hf_find(value)
    if path is None:
        raise ValueError("not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust loader raises plain Exception for a bad file
        reason = str(e).splitlines()[0][:120] if str(e) else e.__class__.__name__
        raise ValueError(f"{path}: not a Hugging Face tokenizer.json ({reason})") from None


def hf_count(value: str, text: str) -> int:
    """Tokens of ``text`` alone: no BOS/EOS or other special tokens a template would add."""
    return len(hf_load(value).encode(text, add_special_tokens=False).ids)


def hf_count_many(value: str, texts: list[str]) -> list[int]:
    return [len(e.ids) for e in hf_load(value).encode_batch(texts, add_special_tokens=False)]


def hf_vocab_words(value: str) -> list[str]:
    """Vocabulary entries that decode to a lowercase word of 3-9 letters (with or without a
    leading space marker such as ``Ġ`` or ``▁``), as plain words, in id order (for BPE: commoner first)."""
    tok = hf_load(value)
    words = (w.strip() for w in tok.decode_batch([[i] for i in range(tok.get_vocab_size())]))
    return list(dict.fromkeys(w for w in words if _WORD.fullmatch(w)))
