"""The mock's queue (``slots``) and its request log, seen from plain HTTP clients (no loadtest code on the path)."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import mock_stats

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(base_url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> float:
    """POST a chat completion; when (perf_counter) the whole answer had been read."""
    req = urllib.request.Request(
        base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    with _DIRECT.open(req, timeout=10) as resp:
        resp.read()
    return time.perf_counter()


def logged(base_url: str) -> list[dict[str, Any]]:
    with _DIRECT.open(base_url.removesuffix("/v1") + "/mock/requests", timeout=5) as resp:
        return json.loads(resp.read())


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 1}


@pytest.mark.timing
def test_slots_make_requests_wait_in_line(mock_server: Any) -> None:
    """2 slots, 6 requests at once, each holding a slot 80 ms: they finish in three waves (80, 160, 240 ms
    after the first was sent; never sooner, whatever the threads' start order)."""
    mock = mock_server(ttft_ms=80, itl_ms=0, output_tokens=1, slots=2)
    post(mock.base_url, CHAT)  # the connection machinery warmed up
    with ThreadPoolExecutor(6) as pool:
        t0 = time.perf_counter()
        took = sorted(t - t0 for t in pool.map(lambda _: post(mock.base_url, CHAT), range(6)))
    stats = mock_stats(mock.base_url)
    assert stats["waiting_max"] == 4  # the mock's own count: 6 arrived, 2 ran, 4 queued
    assert stats["running"] == stats["waiting"] == 0
    waves = [min(took[0:2]), min(took[2:4]), min(took[4:6])]
    # wave k ends k slot-holds after the first arrival (itself after t0): never sooner; later by at most
    # the threads' start spread and scheduling (30 ms at most in 8 runs beside a busy core; margin 60 ms)
    for k, t in enumerate(waves, 1):
        assert 0.08 * k - 0.002 <= t <= 0.08 * k + 0.06, (k, waves)


@pytest.mark.timing
def test_without_slots_nothing_waits(mock_server: Any) -> None:
    mock = mock_server(ttft_ms=80, itl_ms=0, output_tokens=1)
    with ThreadPoolExecutor(6) as pool:
        t0 = time.perf_counter()
        took = sorted(t - t0 for t in pool.map(lambda _: post(mock.base_url, CHAT), range(6)))
    assert mock_stats(mock.base_url)["waiting_max"] == 0
    assert took[-1] < 0.16  # all six in the first wave


def test_request_log_keeps_bodies_and_times_but_never_keys(mock_server: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("LT_TEST_MOCK_KEY", "sk-never-logged")
    mock = mock_server(
        ttft_ms=0, itl_ms=0, output_tokens=1, request_log=3, api_key_header="api-key", api_key_env="LT_TEST_MOCK_KEY"
    )
    for i in range(5):
        post(
            mock.base_url, {**CHAT, "messages": [{"role": "user", "content": f"n{i}"}]}, {"api-key": "sk-never-logged"}
        )
    log = logged(mock.base_url)
    assert [e["body"]["messages"][0]["content"] for e in log] == ["n2", "n3", "n4"]  # the last 3, in order
    assert all(e["path"] == "/v1/chat/completions" for e in log)
    assert log[0]["t"] < log[1]["t"] < log[2]["t"]
    assert "sk-never-logged" not in json.dumps(log) and "api-key" not in log[0]["headers"]


def test_request_log_is_off_by_default(mock_server: Any) -> None:
    mock = mock_server(ttft_ms=0, itl_ms=0, output_tokens=1)
    post(mock.base_url, CHAT)
    assert logged(mock.base_url) == []


def test_a_mock_that_cannot_start_says_why_in_one_line() -> None:
    """start_mock's child (``python -m loadtest.mock``): a bad setting or a missing key variable is
    one line naming it, and start_mock raises it as MockStartError."""
    import subprocess
    import sys

    from loadtest.config.mock import MockSettings, MockStartError
    from loadtest.mock import start_mock

    r = subprocess.run(
        [sys.executable, "-m", "loadtest.mock", '{"ttft_ms": -1}', "127.0.0.1", "0"], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.strip() == "error: ttft_ms: Input should be greater than or equal to 0"
    settings = MockSettings(api_key_env="LOADTEST_TEST_UNSET_KEY_VAR", api_key_header="api-key")
    with pytest.raises(MockStartError, match="LOADTEST_TEST_UNSET_KEY_VAR is not set"), start_mock(settings):
        pass
