"""The mock's prefix cache (``target.mock.prefix_cache``), against vLLM's documented rules: full blocks only,
the last prompt token always computed, blocks usable once their prefill is done, LRU eviction tail first;
TTFT = base + prefill of the uncached tokens; ``usage.prompt_tokens_details.cached_tokens``."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from loadtest.mock import MockProcess
from loadtest.mock.prefixcache import PrefixCache
from tests.conftest import mock_stats, run_cli

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
WORDS = [f"w{i}" for i in range(4000)]  # distinct words: one token each to the mock (it counts words)


def ask(base_url: str, text: str, stream: bool = False) -> tuple[float, dict[str, Any]]:
    """(seconds until the whole answer was read, its usage) of a one-token chat completion."""
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": 1}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    req = urllib.request.Request(
        base_url + "/chat/completions", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    t = time.perf_counter()
    with _DIRECT.open(req, timeout=10) as resp:
        raw = resp.read()
    took = time.perf_counter() - t
    if not stream:
        return took, json.loads(raw)["usage"]
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]
    return took, next(e["usage"] for e in events if e.get("usage"))


def test_only_full_blocks_count_and_the_last_token_is_always_computed() -> None:
    cache = PrefixCache(block_tokens=16, capacity_tokens=1 << 20)
    a = WORDS[:40]  # 2 full blocks and 8 tokens
    cache.insert(cache.chain(a), ready_at=0.0)
    assert len(cache.chain(a)) == 2
    assert cache.lookup(cache.chain(a), len(a), now=1.0) == 32  # the partial third block is not cached
    b = WORDS[:32]  # exactly 2 blocks: the last token is recomputed, so only floor(31/16) = 1 block hits
    assert cache.lookup(cache.chain(b), len(b), now=1.0) == 16
    c = WORDS[:20] + ["other"] * 30  # shares the first block only: its second block differs
    assert cache.lookup(cache.chain(c), len(c), now=1.0) == 16
    d = ["other", *WORDS[1:40]]  # the first token differs: no later block matches (a chain of hashes)
    assert cache.lookup(cache.chain(d), len(d), now=1.0) == 0


def test_blocks_are_usable_once_their_prefill_is_done() -> None:
    cache = PrefixCache(block_tokens=16, capacity_tokens=1 << 20)
    a = WORDS[:100]
    cache.insert(cache.chain(a), ready_at=5.0)
    assert cache.lookup(cache.chain(a), 100, now=4.9) == 0
    assert cache.lookup(cache.chain(a), 100, now=5.0) == 96


def test_eviction_is_lru_and_a_shared_head_outlives_its_tails() -> None:
    cache = PrefixCache(block_tokens=16, capacity_tokens=4 * 16)  # 4 blocks
    head = WORDS[:32]
    a, b = head + WORDS[100:132], head + WORDS[200:232]  # 2 shared blocks, then 2 of each's own
    cache.insert(cache.chain(a), 0.0)
    cache.insert(cache.chain(WORDS[300:332]), 0.0)  # 2 unrelated blocks: a's tail goes, not its head
    assert cache.lookup(cache.chain([*b, "x"]), 65, now=1.0) == 32  # b finds the head a left
    assert cache.lookup(cache.chain([*a, "x"]), 65, now=1.0) == 32  # a's own blocks are gone
    cache.insert(cache.chain(b), 0.0)  # touches the head again: the unrelated blocks are the oldest now
    assert cache.lookup(cache.chain(WORDS[300:333]), 33, now=1.0) == 0
    assert cache.lookup(cache.chain([*b, "x"]), 65, now=1.0) == 64
    assert len(cache.blocks) == 4


@pytest.mark.timing
def test_ttft_falls_by_the_prefill_of_the_cached_tokens(mock_server: Callable[..., MockProcess]) -> None:
    mock = mock_server(ttft_ms=5, itl_ms=0, output_tokens=1, prefix_cache={"prefill_ms_per_1k": 100})
    colds, warms = [], []
    for k in range(5):  # five prompts, each sent twice: medians, as a busy machine delays single requests
        prompt = " ".join([f"p{k}", *WORDS[:999]])
        cold, u1 = ask(mock.base_url, prompt)
        warm, u2 = ask(mock.base_url, prompt)
        assert u1["prompt_tokens"] == u2["prompt_tokens"] == 1000
        assert u1["prompt_tokens_details"] == {"cached_tokens": 0}
        assert u2["prompt_tokens_details"] == {"cached_tokens": 992}  # floor(999 / 16) * 16
        colds.append(cold)
        warms.append(warm)
    # cold: 5 + 100 ms; warm: 5 + 0.8 ms (8 uncached tokens); the difference is the 992 tokens' prefill,
    # within 10% (medians of five; single requests were up to 15 ms late on this 2-core machine at load 7)
    gap_ms = (float(np.median(colds)) - float(np.median(warms))) * 1e3
    assert abs(gap_ms - 100 * 992 / 1000) < 0.1 * 99.2, (colds, warms)
    _, u3 = ask(mock.base_url, " ".join(["p0", *WORDS[:499], *WORDS[2000:2100]]), stream=True)  # 500 shared
    assert u3["prompt_tokens_details"] == {"cached_tokens": 496}  # 31 full blocks of 16
    stats = mock_stats(mock.base_url)["prefix_cache"]
    assert stats["queries"] == 10 * 1000 + 600 and stats["hits"] == 5 * 992 + 496


@pytest.mark.timing
def test_requests_in_prefill_together_both_miss(mock_server: Callable[..., MockProcess]) -> None:
    mock = mock_server(ttft_ms=50, itl_ms=0, output_tokens=1, prefix_cache={})
    prompt = " ".join(WORDS[:200])
    with ThreadPoolExecutor(2) as pool:
        usages = [u for _, u in pool.map(lambda _: ask(mock.base_url, prompt), range(2))]
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0, 0]
    assert ask(mock.base_url, prompt)[1]["prompt_tokens_details"] == {"cached_tokens": 192}


def test_without_a_prefix_cache_usage_has_no_details(mock_server: Callable[..., MockProcess]) -> None:
    mock = mock_server(ttft_ms=0, itl_ms=0, output_tokens=1)
    prompt = " ".join(WORDS[:100])
    ask(mock.base_url, prompt)
    assert "prompt_tokens_details" not in ask(mock.base_url, prompt)[1]
    assert mock_stats(mock.base_url)["prefix_cache"] is None


def test_mock_command_prefix_cache_option_errors_are_one_line() -> None:
    bad = run_cli("mock", "--port", "0", "--prefix-cache", "block_tokens")
    assert bad.returncode == 2 and "--prefix-cache: expected on or KEY=VALUE" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    zero = run_cli("mock", "--port", "0", "--prefix-cache", "block_tokens=0")
    assert zero.returncode == 2 and "--prefix-cache: block_tokens:" in zero.stderr, zero.stderr
