"""The SDK's aiohttp transport (``target.transport: aiohttp``), with each request's phases stamped.

The SDK's ``AiohttpTransport`` runs a request on an aiohttp ``ClientSession``; we give it a
session of our own whose trace hooks stamp the :class:`~loadtest.transport.phases.Phases` of the request
under way. The hooks run inside the task that sent the request, so the request's phases are found
through a context variable the client sets just before sending. aiohttp opens TCP and TLS in one
step: its ``connect`` phase holds the TLS handshake (``tls_ms`` stays empty).

Proxies: the one the environment names for the target (``HTTP(S)_PROXY``, ``NO_PROXY``), https
proxies included.
"""

from __future__ import annotations

import ssl
import time
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx2
from openai._vendor.httpx_aiohttp import AiohttpTransport

from loadtest.transport.phases import Phases

__all__ = ["CURRENT_PHASES", "aiohttp_transport"]

_NS = time.perf_counter_ns
CURRENT_PHASES: ContextVar[Phases | None] = ContextVar("loadtest_phases", default=None)
_KEEPALIVE_S = 5.0  # httpx2's default keep-alive expiry, which the SDK's own aiohttp client uses


def _stamp(setter: Any) -> Any:
    async def hook(_session: aiohttp.ClientSession, _ctx: SimpleNamespace, _params: Any) -> None:
        phases = CURRENT_PHASES.get()
        if phases is not None:
            setter(phases, _NS())

    return hook


def _slot(p: Phases, t: int) -> None:
    p.slot = p.slot or t


def _created(p: Phases, t: int) -> None:
    p.connected, p.new_connection, p.tls_inside_connect = t, True, True


def _reused(p: Phases, t: int) -> None:
    p.slot = p.slot or t
    p.connected = p.slot


def _written(p: Phases, t: int) -> None:
    p.written = t


def _head(p: Phases, t: int) -> None:
    p.head = t


def _trace_config() -> aiohttp.TraceConfig:
    tc = aiohttp.TraceConfig()
    tc.on_connection_queued_end.append(_stamp(_slot))
    tc.on_connection_create_start.append(_stamp(_slot))
    tc.on_connection_create_end.append(_stamp(_created))
    tc.on_connection_reuseconn.append(_stamp(_reused))
    tc.on_request_headers_sent.append(_stamp(_written))
    tc.on_request_chunk_sent.append(_stamp(_written))
    tc.on_request_end.append(_stamp(_head))
    return tc


def aiohttp_transport(
    *, max_connections: int, ssl_context: ssl.SSLContext | None, proxy_url: str | None
) -> httpx2.AsyncBaseTransport:
    """The SDK's aiohttp transport on a traced session (made on first use, inside the running loop).

    ``proxy_url``: the proxy for every request, found once by the caller: aiohttp's own
    ``trust_env`` looks the environment (and ~/.netrc) up again for each request, which added
    10 ms to every TTFT at concurrency 16 on the project's machine."""
    tls: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=_KEEPALIVE_S, ssl=tls)
        return aiohttp.ClientSession(connector=connector, trace_configs=[_trace_config()])

    return AiohttpTransport(client=session, proxy=httpx2.Proxy(proxy_url) if proxy_url else None)
