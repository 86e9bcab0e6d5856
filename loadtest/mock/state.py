"""What one mock server process keeps: its settings, counters, the samples it measured, its request log,
its queue (``slots``), its rate limiter and its tokenizer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from loadtest.analysis.stats import distribution
from loadtest.config.mock import MockSettings
from loadtest.mock.faults import FaultPlan
from loadtest.mock.inputs import prompt_image_tokens, prompt_texts
from loadtest.mock.limits import RateLimiter
from loadtest.mock.metrics import MockMetrics
from loadtest.mock.prefixcache import PrefixCache
from loadtest.mock.tokenizer import HFTokenizer
from loadtest.mock.wire import now

__all__ = ["MAX_SAMPLES", "WORDS", "ApiCounts", "MockState", "prompt_words"]

# never logged: where clients put keys (the configured api_key_header is added)
_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization", "cookie"})

# Each is one token alone and inside any run of them, for both o200k_base and cl100k_base
# (checked by a test), so a tokenizer recount of the generated text equals the token count.
WORDS = (
    " the",
    " of",
    " and",
    " to",
    " in",
    " is",
    " that",
    " for",
    " it",
    " as",
    " with",
    " on",
    " was",
    " be",
    " by",
    " at",
    " this",
    " are",
    " from",
    " or",
)
MAX_SAMPLES = 200_000  # of each measured series: a long run's memory stays bounded


class MockState:
    """Shared by all connections of one server process."""

    def __init__(self, config: MockSettings) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.requests = 0
        self.in_flight = 0
        self.in_flight_max = 0
        self.next_token_slot = 0.0  # loop time of the next free slot under capacity_tok_s
        self.ttft_s: list[float] = []
        self.itl_s: list[float] = []
        self.ttfa_s: list[float] = []  # to the first answer chunk (after the reasoning)
        self.stream_chunks = self.stream_tokens = 0  # of the streams sent to the end
        self.apis = ApiCounts()  # responses, embeddings, images, tool calls
        self.ids = 0
        self.faults: dict[str, int] = {}
        self.fault_plan = FaultPlan(config.faults)
        self.throttled = 0
        self.limiter = self._limiter()
        self.connections = 0  # accepted (TCP) connections: how often a client opened a new one
        self.unauthorized = 0
        self.api_key = os.environ.get(config.api_key_env or "", "") if config.api_key_header else None
        self.tok = HFTokenizer(config.tokenizer) if config.tokenizer else None
        self.log: deque[dict[str, Any]] = deque(maxlen=config.request_log or 1)
        self.slots = asyncio.Semaphore(config.slots) if config.slots else None  # FIFO: waiters in arrival order
        self.running = self.waiting = self.waiting_max = 0
        self.metrics = MockMetrics()  # GET /metrics (metrics.py); like a server's, never reset
        pc = config.prefix_cache
        self.prefix = PrefixCache(pc.block_tokens, pc.capacity_tokens) if pc is not None else None

    def record(self, t: float, method: str, path: str, headers: dict[str, str], body: Any) -> dict[str, Any] | None:
        """Keep a request for ``GET /mock/requests`` (tests read what arrived, and when); secrets left out.
        Returns the entry kept (the completion adds the ``answer`` it generates), None when the log is off."""
        if not self.config.request_log:
            return None
        hidden = _SECRET_HEADERS | {(self.config.api_key_header or "").lower()}
        kept = {k: v for k, v in headers.items() if k not in hidden}
        entry = {"t": t, "method": method, "path": path, "headers": kept, "body": body}
        self.log.append(entry)
        return entry

    @contextlib.asynccontextmanager
    async def generating(self) -> AsyncIterator[None]:
        """Hold one of the ``slots`` while a response is generated; wait in line when all are taken."""
        if self.slots is None:
            self.metrics.queue.observe(0.0)
            self.running += 1
            try:
                yield
            finally:
                self.running -= 1
            return
        self.waiting += 1
        self.waiting_max = max(self.waiting_max, self.waiting)
        queued = now()
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.metrics.queue.observe(now() - queued)
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self.slots.release()

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        """The prompt's text tokens and its images' (inputs.py)."""
        text = self.tok.prompt_tokens(body) if self.tok is not None else prompt_words(body)
        return text + sum(t for _, _, t in prompt_image_tokens(body))

    def prompt_token_seq(self, body: dict[str, Any]) -> list[Any]:
        """The prompt's tokens as the mock counts them (words, or the tokenizer's ids), messages in order."""
        messages = body.get("messages")
        if isinstance(messages, list):
            texts = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
        else:
            texts = [body["prompt"]] if isinstance(body.get("prompt"), str) else []
        if self.tok is not None:
            return [i for t in texts for i in self.tok.encode(t, False)]
        return [w for t in texts for w in t.split()]

    def prefill(self, body: dict[str, Any], start: float) -> tuple[float, int, list[int]]:
        """(prefill seconds, cached tokens, the prompt's block chain) of a request starting at ``start``
        under the prefix cache; (0, 0, []) without one."""
        pc = self.config.prefix_cache
        if self.prefix is None or pc is None:
            return 0.0, 0, []
        tokens = self.prompt_token_seq(body)
        chain = self.prefix.chain(tokens)
        cached = self.prefix.lookup(chain, len(tokens), start)
        return pc.prefill_ms_per_1k * (len(tokens) - cached) / 1e6, cached, chain

    def piece(self, i: int, k: int) -> str:
        """Text of generated token ``i`` of answer ``k``."""
        return self.tok.piece(i, k) if self.tok is not None else WORDS[i % len(WORDS)]

    def _limiter(self) -> RateLimiter | None:
        c = self.config
        limits = {
            ("requests", "minute"): c.rpm,
            ("tokens", "minute"): c.tpm,
            ("requests", "day"): c.rpd,
            ("tokens", "day"): c.tpd,
        }
        if not any(limits.values()):
            return None
        return RateLimiter(
            {k: v for k, v in limits.items() if v},
            burst_s=c.burst_s,
            dialect=c.ratelimit_headers,
            minute_s=c.ratelimit_minute_s,
        )

    def reset(self) -> None:
        self.requests = 0
        self.faults = {}
        self.fault_plan = FaultPlan(self.config.faults)
        self.throttled = 0
        self.unauthorized = 0
        self.limiter = self._limiter()
        self.connections = 0
        self.in_flight_max = self.in_flight
        self.waiting_max = self.waiting
        self.log.clear()
        if self.prefix is not None:
            self.prefix.clear()
        self.ttft_s.clear()
        self.itl_s.clear()
        self.ttfa_s.clear()
        self.stream_chunks = self.stream_tokens = 0
        self.apis = ApiCounts()

    def stats(self) -> dict[str, Any]:
        def pct(values: list[float]) -> dict[str, float | None]:
            d = distribution(values)  # the definitions every summary uses (linear interpolation)
            return {"p50": _ms(d["p50"]), "p99": _ms(d["p99"]), "count": len(values)}

        return {
            "connections": self.connections,
            "throttled": self.throttled,
            "unauthorized": self.unauthorized,
            "faults": self.faults,
            "requests": self.requests,
            "in_flight": self.in_flight,
            "in_flight_max": self.in_flight_max,
            "running": self.running,  # generating now (at most slots)
            "waiting": self.waiting,  # queued for a slot
            "waiting_max": self.waiting_max,
            "ttft_ms": pct(self.ttft_s),
            "itl_ms": pct(self.itl_s),
            "ttfa_ms": pct(self.ttfa_s),
            "stream_chunks": self.stream_chunks,
            "stream_tokens": self.stream_tokens,
            "prefix_cache": (
                {"queries": self.prefix.queries, "hits": self.prefix.hits, "blocks": len(self.prefix.blocks)}
                if self.prefix is not None
                else None
            ),
            **self.apis.stats(),
        }

    def gap(self, base_ms: float) -> float:
        j = self.config.jitter_ms
        if j <= 0:
            return base_ms / 1e3
        return max(0.0, base_ms + self.rng.uniform(-j, j)) / 1e3


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def prompt_words(body: dict[str, Any]) -> int:
    """Prompt tokens, estimated as whitespace-separated words (exact for loadtest's synthetic prompts)."""
    return sum(len(t.split()) for t in prompt_texts(body))


class ApiCounts:
    """What the mock received and answered beyond chat: per API, images (and their sizes and tokens),
    embeddings inputs, tool calls made; in ``/mock/stats``."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.images = self.image_tokens = self.embedding_inputs = self.embedding_tokens = self.tool_calls = 0
        self.image_sizes: dict[str, int] = {}

    def received(self, api: str, body: dict[str, Any]) -> None:
        self.requests[api] = self.requests.get(api, 0) + 1
        for w, h, tokens in prompt_image_tokens(body):
            self.images += 1
            self.image_tokens += tokens
            self.image_sizes[f"{w}x{h}"] = self.image_sizes.get(f"{w}x{h}", 0) + 1

    def stats(self) -> dict[str, Any]:
        return {
            "api_requests": self.requests,
            "images": self.images,
            "image_sizes": self.image_sizes,
            "image_tokens": self.image_tokens,
            "embedding_inputs": self.embedding_inputs,
            "embedding_tokens": self.embedding_tokens,
            "tool_calls": self.tool_calls,
        }
