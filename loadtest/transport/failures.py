"""How a failed request is recorded: its class (``error_class``), a short message without secrets,
and the response headers a failure is read with (rate limits)."""

from __future__ import annotations

import asyncio
import ssl
import time

import aiohttp
import httpx2
import orjson

from loadtest.analysis.records import RequestRecord
from loadtest.config.secrets import scrub
from loadtest.transport.phases import Phases
from loadtest.transport.responses import StreamFailed

__all__ = [
    "HTTPError",
    "StreamError",
    "classify_status",
    "error_message",
    "fail",
    "ratelimit_headers",
    "transport_error_class",
]

_ERROR_TEXT_MAX = 200
_NS = time.perf_counter_ns


def classify_status(status: int) -> str:
    if status == 429:
        return "http_429"
    if status >= 500:
        return "http_5xx"
    return "http_4xx"


def ratelimit_headers(headers: httpx2.Headers) -> dict[str, str] | None:
    found = {k: v for k, v in headers.items() if k.startswith("x-ratelimit-")}
    return found or None


def transport_error_class(root: BaseException, phases: Phases, *, got_status: bool) -> str:
    """Classify by the original error and by how far the request got.

    ``connect``: no connection (refused, DNS, connect timeout, a proxy refusing the tunnel);
    ``tls``: the TLS handshake failed (a certificate, a protocol mismatch); ``reset``: the
    connection was up and ended (reset or EOF) before the response's status line: an overloaded
    server, not an absent one; ``stream_broken``: it ended after the status line. The SDK's aiohttp
    wrapper maps every ``aiohttp.ClientConnectionError`` to ``ConnectTimeout``, so the exception
    type alone would mislabel a server hanging up as a refused connection."""
    if isinstance(root, ssl.SSLError | aiohttp.ClientSSLError) and not (got_status or phases.head):
        return "tls"
    if isinstance(
        root,
        aiohttp.ConnectionTimeoutError
        | aiohttp.ClientConnectorError
        | aiohttp.ClientProxyConnectionError
        | httpx2.ConnectError
        | httpx2.ConnectTimeout
        | httpx2.ProxyError
        | ConnectionRefusedError,
    ):
        return "connect"
    if isinstance(root, TimeoutError | asyncio.TimeoutError | httpx2.TimeoutException):
        return "timeout"
    if got_status or phases.head:
        return "stream_broken"
    return "reset" if phases.connected else "connect"


def _short(text: str, secrets: tuple[str, ...]) -> str:
    text = " ".join(scrub(text, secrets).split())
    return text if len(text) <= _ERROR_TEXT_MAX else text[: _ERROR_TEXT_MAX - 3] + "..."


def fail(rec: RequestRecord, t0: int, error_class: str, text: str, secret: tuple[str, ...]) -> None:
    rec.end_ns = _NS() - t0
    rec.status = "error"
    rec.error_class = error_class
    rec.error = _short(text, secret)
    if rec.chunk_times_ns:  # a broken stream keeps the timing it got
        rec.first_token_ns, rec.last_token_ns = rec.chunk_times_ns[0], rec.chunk_times_ns[-1]


class StreamError(StreamFailed):
    """The server sent an error object inside the stream."""


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_message(raw: bytes) -> str:
    try:
        err = orjson.loads(raw).get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    except (ValueError, AttributeError):
        pass
    return raw.decode("utf-8", "replace")
