"""The floor: a bare asyncio client (raw HTTP/1.1 keep-alive + SSE line parsing, no SDK, no records).

Used by the benchmarks to tell the harness's own cost from the machine's: whatever loadtest
spends above this is overhead we could remove.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["BareResult", "run_bare"]


@dataclass
class BareResult:
    requests: int = 0
    tokens: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    itl_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0


async def _read_response(reader: asyncio.StreamReader, res: BareResult, sent: float, record: bool) -> None:
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"bare client: unexpected status {status!r}")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    last = None
    buf = b""
    while True:
        size = int((await reader.readline()).strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            break
        buf += await reader.readexactly(size + 2)
        now = time.perf_counter()
        *events, buf = buf.split(b"\n\n")
        for ev in events:
            ev = ev.strip()
            if not ev.startswith(b"data:") or ev.endswith(b"[DONE]"):
                continue
            obj = json.loads(ev[5:])
            choices = obj.get("choices")
            if choices and (choices[0].get("delta") or {}).get("content"):
                res.tokens += 1
                if record:
                    if last is None:
                        res.ttft_ms.append((now - sent) * 1e3)
                    else:
                        res.itl_ms.append((now - last) * 1e3)
                last = now
    res.requests += 1


async def run_bare(
    base_url: str, concurrency: int, requests: int, max_tokens: int = 64, record: bool = True
) -> BareResult:
    """Closed loop: ``concurrency`` connections, ``requests`` streamed chat requests in all."""
    url = urlsplit(base_url)
    path = url.path.rstrip("/") + "/chat/completions"
    body = json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hello " * 32}],
            "max_tokens": max_tokens,
            "stream": True,
        }
    ).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {url.hostname}:{url.port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    res = BareResult()
    left = [requests]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            while left[0] > 0:
                left[0] -= 1
                sent = time.perf_counter()
                writer.write(head + body)
                await _read_response(reader, res, sent, record)
        finally:
            writer.close()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    res.wall_s = time.perf_counter() - t
    return res
