"""The little HTTP/1.1 the mock writes, and its clock: whole responses, chunks, errors, sleeping until a due time."""

from __future__ import annotations

import asyncio
import json
import math
import time

__all__ = ["chunk", "error", "now", "response", "sleep_until"]

now = time.perf_counter  # uvloop's loop.time() has 1 ms resolution: too coarse to schedule or measure ITL


async def sleep_until(due: float) -> None:
    """Sleep until ``due`` (perf_counter seconds), never waking early.

    uvloop rounds a delay to the nearest millisecond, so a plain sleep can end 0.5 ms early; rounding
    the delay up to whole milliseconds costs at most ~1 ms of lateness and no busy-waiting.
    """
    while (delay := due - now()) > 0:
        await asyncio.sleep(math.ceil(delay * 1e3) / 1e3)


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def response(
    status: str, body: bytes, ctype: bytes = b"application/json", close: bool = False, extra: bytes = b""
) -> bytes:
    """A whole response; ``extra``: more header lines, each ending in CRLF."""
    conn = b"connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s\r\n"
        % (status.encode(), ctype, len(body), conn, extra)
    ) + body


def error(status: str, message: str, kind: str = "invalid_request_error", extra: bytes = b"") -> bytes:
    return response(status, json.dumps({"error": {"message": message, "type": kind}}).encode(), extra=extra)
