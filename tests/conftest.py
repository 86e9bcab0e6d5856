from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.mock import MockConfig, MockProcess, start_mock

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def mock_server() -> Iterator[Callable[..., MockProcess]]:
    """Start the mock in its own process on a free port of 127.0.0.1; all are stopped after the test."""
    stack = []

    def start(**kwargs: object) -> MockProcess:
        cm = start_mock(MockConfig(**kwargs))  # type: ignore[arg-type]
        handle = cm.__enter__()
        stack.append(cm)
        return handle

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


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


def mock_stats(base_url: str) -> dict[str, Any]:
    """What the mock at ``base_url`` (ending in /v1) measured itself: requests, in flight, TTFT/ITL sent."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/mock/stats", timeout=5) as resp:
        return json.loads(resp.read())


def only_run_dir(parent: Path) -> Path:
    """The one run directory under ``parent`` (``parent/<scenario name>/<timestamp>``)."""
    (name,) = list(parent.iterdir())
    (run,) = [p for p in name.iterdir() if p.is_dir()]  # history.jsonl sits beside the runs
    return run
