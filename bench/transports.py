"""Request paths inside AsyncOpenAI, compared on client CPU per streamed request.

Zero-delay mock (so the client is the bottleneck), concurrency 64, 64 output tokens. Each path
reads every SSE event of the stream; only the way the request is made and the bytes are read
differ. This is what README's "How the request path was chosen" quotes.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import openai
import uvloop

from loadtest.analysis.records import RequestRecord
from loadtest.mock import MockSettings, start_mock
from loadtest.transport.client import make_endpoint, send
from loadtest.workload.prompts import PromptItem

__all__ = ["compare_transports"]

CONCURRENCY, REQUESTS = 64, 3000
MESSAGES = [{"role": "user", "content": "hello " * 32}]
RAW = {"headers": {"X-Stainless-Raw-Response": "stream"}}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _sdk(base_url: str, aiohttp: bool) -> openai.AsyncOpenAI:
    http = openai.DefaultAioHttpClient() if aiohttp else openai.DefaultAsyncHttpxClient()
    return openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, http_client=http)


async def _typed_create(c: openai.AsyncOpenAI) -> None:
    stream = await c.chat.completions.create(
        model="m",
        messages=MESSAGES,
        max_tokens=64,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    async for _ in stream:
        pass


async def _raw_create(c: openai.AsyncOpenAI) -> None:
    async with c.chat.completions.with_streaming_response.create(
        model="m",
        messages=MESSAGES,
        max_tokens=64,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    ) as r:
        async for line in r.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                json.loads(line[5:])


async def _post(c: openai.AsyncOpenAI) -> None:
    body = {
        "model": "m",
        "messages": MESSAGES,
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = await c.post("/chat/completions", body=body, cast_to=httpx2.Response, options=RAW)  # type: ignore[arg-type]
    try:
        async for line in r.aiter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                json.loads(line[5:])
    finally:
        await r.aclose()


async def _timed(make: Callable[[], Any], one: Callable[[Any], Awaitable[None]]) -> tuple[float, float]:
    client = make()
    left = [CONCURRENCY * 4]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one(client)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))  # warm up connections
    left[0] = REQUESTS
    cpu0, t = _cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    wall, cpu = time.perf_counter() - t, _cpu() - cpu0
    await client.close()
    return REQUESTS / wall, cpu / REQUESTS * 1e3


def compare_transports() -> list[dict[str, Any]]:
    item = PromptItem(messages=MESSAGES, prompt=None, max_tokens=64, input_tokens=32)
    t0 = time.perf_counter_ns()
    rows = []
    with start_mock(MockSettings(ttft_ms=0, itl_ms=0, output_tokens=64)) as mock:
        url = mock.base_url

        async def loadtest_send(ep: Any) -> None:
            await send(
                ep,
                RequestRecord(id=0, step=0),
                item,
                model="m",
                api="chat",
                stream=True,
                extra_body=None,
                t0=t0,
                timeout_s=60,
            )

        paths: list[tuple[str, Callable[[], Any], Callable[[Any], Awaitable[None]]]] = [
            ("typed create() (pydantic per chunk), httpx2 transport", lambda: _sdk(url, False), _typed_create),
            ("with_streaming_response.create() + iter_lines, httpx2", lambda: _sdk(url, False), _raw_create),
            ("with_streaming_response.create() + iter_lines, aiohttp", lambda: _sdk(url, True), _raw_create),
            ("client.post(cast_to=httpx2.Response) + aiter_lines, aiohttp", lambda: _sdk(url, True), _post),
            (
                "loadtest: prebuilt request on the SDK's aiohttp client, orjson",
                lambda: make_endpoint(
                    url, "x", max_connections=CONCURRENCY, timeout_s=60, connect_timeout_s=5, stack="aiohttp"
                ),
                loadtest_send,
            ),
            (
                "loadtest: prebuilt request on loadtest's HTTP/1.1 transport (h1.py), orjson",
                lambda: make_endpoint(url, "x", max_connections=CONCURRENCY, timeout_s=60, connect_timeout_s=5),
                loadtest_send,
            ),
        ]
        for name, make, one in paths:
            req_s, cpu_ms = uvloop.run(_timed(make, one))
            rows.append({"path": name, "req_s": req_s, "cpu_ms_per_req": cpu_ms})
    return rows
