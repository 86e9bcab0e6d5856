from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.analysis.records import RequestRecord
from loadtest.mock import MockProcess, MockSettings, start_mock
from loadtest.output.rundir import read_records

ROOT = Path(__file__).resolve().parent.parent
# Tests that start Ray (a local instance, or the module's head) run on one worker of the parallel
# pass (`make test`: pytest-xdist's --dist loadgroup), one after the other: Ray instances started
# side by side would contend for the two cores and their ports.
RAY_GROUP = pytest.mark.xdist_group("ray")


@pytest.fixture
def mock_server() -> Iterator[Callable[..., MockProcess]]:
    """Start the mock in its own process on a free port of 127.0.0.1; all are stopped after the test."""
    stack = []

    def start(**kwargs: object) -> MockProcess:
        cm = start_mock(MockSettings(**kwargs))  # type: ignore[arg-type]
        handle = cm.__enter__()
        stack.append(cm)
        return handle

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def ca_loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """``"load CAs"`` appended each time a CA bundle is loaded into an ``SSLContext``. The process's shared
    default trust (``config/tls``) is dropped before the test, as in a new process, and after it: a test
    may have built it on a CA of its own."""
    from loadtest.config.tls import _default

    loads: list[str] = []
    load = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append("load CAs")
        load(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    _default.cache_clear()
    yield loads
    _default.cache_clear()


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``loadtest ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "loadtest", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or ROOT,
        timeout=timeout,
    )


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def mock_stats(base_url: str, ca_file: str | None = None) -> dict[str, Any]:
    """What the mock at ``base_url`` (ending in /v1) measured itself: requests, in flight, TTFT/ITL sent,
    connections accepted (this call's own included). ``ca_file``: the CA of an https mock."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with direct.open(base_url.removesuffix("/v1") + "/mock/stats", timeout=5) as resp:
        return json.loads(resp.read())


def only_run_dir(parent: Path) -> Path:
    """The one run directory under ``parent`` (``parent/<scenario name>/<timestamp>``)."""
    (name,) = list(parent.iterdir())
    (run,) = [p for p in name.iterdir() if p.is_dir()]  # history.jsonl sits beside the runs
    return run


def check_shared_by_two_workers(
    run: Path, stats: dict[str, Any], *, started_within_ms: float
) -> tuple[list[RequestRecord], dict[str, Any]]:
    """A step at concurrency 6 with 60 measured and 4 warmup requests, run by workers 0 and 1 (processes
    or Ray actors) and merged into one run directory: what every sharded run must show. ``stats`` is
    the mock's. Returns the records and the summary for the checks only one kind of run has."""
    assert stats["in_flight_max"] == 6  # the server saw the configured total concurrency: reached, never passed
    assert stats["requests"] == 64
    records = list(read_records(run / "requests.jsonl"))
    measured = [x for x in records if not x.warmup]
    assert len(records) == 64 and len(measured) == 60 and len({x.id for x in records}) == 64
    assert {x.worker for x in records} == {0, 1}
    for w in (0, 1):  # concurrency 3 + 3: requests split alike, each worker's records its own
        assert sum(1 for x in measured if x.worker == w) == 30
    first = [min(x.sent_ns for x in records if x.worker == w) for w in (0, 1)]
    assert abs(first[0] - first[1]) < started_within_ms * 1e6  # one start time (a barrier), one timeline
    summary = json.loads((run / "summary.json").read_text())
    (step,) = summary["steps"]
    assert step["requests"] == {"sent": 60, "ok": 60, "failed": 0} and step["in_flight"]["max"] == 6
    shares = step["workers"]
    assert [w["worker"] for w in shares] == [0, 1] and [w["sent"] for w in shares] == [30, 30]
    ok_by_worker = [sum(1 for x in measured if x.worker == w and x.status == "ok") for w in (0, 1)]
    assert [w["ok"] for w in shares] == ok_by_worker == [30, 30]  # each worker's records, all answered
    assert len((run / "steps.jsonl").read_text().splitlines()) == 2  # one health line per worker
    return records, summary


@pytest.fixture(scope="session")
def llama_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Llama-like (SentencePiece-style, BOS-adding) tokenizer.json, trained offline for the tests."""
    from tests.hf_tokenizers import llama_like

    return str(llama_like(tmp_path_factory.mktemp("hf") / "tokenizer.json"))


@pytest.fixture(scope="session")
def bytelevel_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Llama 3 / Qwen-like (byte-level BPE) tokenizer.json, trained offline for the tests."""
    from tests.hf_tokenizers import byte_level

    return str(byte_level(tmp_path_factory.mktemp("hf") / "tokenizer.json"))
