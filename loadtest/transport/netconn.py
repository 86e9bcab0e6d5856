"""Connections for ``h1.py``: TCP, an HTTP proxy's tunnel, then TLS, each phase stamped.

A connection is an asyncio protocol whose reads queue up with the time each arrived
(``perf_counter_ns`` inside ``data_received``), so the reader stamps an event with the read that
carried it, not with the moment the parser got round to it: when the loop is busy, several reads may
wait for one wake-up of the reader, and each keeps its own time (reads that came within 0.2 ms of
the first queued one are parsed together and share the last one's time).

Proxies come from the environment as curl and the SDK take them: ``HTTPS_PROXY`` for https
targets, ``HTTP_PROXY`` for http ones, ``ALL_PROXY`` for either, ``NO_PROXY`` to bypass (the
standard library's parsing). https goes through a ``CONNECT`` tunnel; http is forwarded in absolute
form. Only ``http://`` proxies are spoken here; another scheme is a :class:`ProxyUnsupported`
the runner turns into a switch to the aiohttp transport, so a proxy is never silently ignored.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment

import httpx2

from loadtest.transport.phases import Phases

__all__ = [
    "Connection",
    "Proxy",
    "ProxyUnsupported",
    "env_proxy",
    "env_proxy_url",
    "open_connection",
    "origin",
    "proxy_route",
    "read_head",
]

_NS = time.perf_counter_ns
COALESCE_NS = 200_000  # reads this close together are parsed as one (README: arrival stamps)
_MAX_HEAD = 64 * 1024  # status line and headers of a response


class ProxyUnsupported(ValueError):
    """The environment names a proxy that loadtest's transport does not speak (https://, socks)."""

    def __init__(self, message: str, scheme: str) -> None:
        super().__init__(message)
        self.scheme = scheme


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: bytes | None  # a Proxy-Authorization header value, from the URL's userinfo

    @property
    def shown(self) -> str:
        """How to name the proxy in a message: never its credentials."""
        return f"http://{self.host}:{self.port}"


def env_proxy_url(scheme: str, host: str, port: int) -> str | None:
    """The proxy URL the environment asks for to reach ``scheme://host:port`` (None: connect directly),
    credentials included: never show it."""
    proxies = getproxies_environment()
    url = proxies.get(scheme) or proxies.get("all")
    if not url or proxy_bypass_environment(f"{host}:{port}", proxies):
        return None
    return url if "://" in url else f"http://{url}"


def env_proxy(scheme: str, host: str, port: int) -> Proxy | None:
    """The proxy to reach ``scheme://host:port`` through, for the h1 transport (None: directly)."""
    url = env_proxy_url(scheme, host, port)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        where = f"{parts.scheme}://{parts.hostname or ''}"
        raise ProxyUnsupported(f"{scheme.upper()}_PROXY is {where}", parts.scheme)
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = b"Basic " + base64.b64encode(pair)
    return Proxy(parts.hostname, parts.port or 80, auth)


def origin(url: str) -> tuple[str, str, int]:
    """``scheme, host, port`` of ``url`` (the scheme's default port when none is given)."""
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def proxy_route(base_url: str, transport: str) -> tuple[str, str | None]:
    """The transport a run uses to reach ``base_url`` given the environment's proxies, and a one-line
    notice saying so (None: no proxy). Never silent: a proxy in use is named (without credentials);
    one the h1 transport cannot speak switches the run to aiohttp; SOCKS, which neither speaks, is an
    error (``ProxyUnsupported``)."""
    scheme, host, port = origin(base_url)
    try:
        proxy = env_proxy(scheme, host, port)
    except ProxyUnsupported as e:
        if e.scheme != "https":
            msg = f"{e}: neither transport speaks it; unset it or list the host in NO_PROXY"
            raise ProxyUnsupported(msg, e.scheme) from None
        if transport == "h1":
            return "aiohttp", f"{e}: the h1 transport speaks http:// proxies only; this run uses aiohttp"
        return transport, f"requests go through the proxy in {e} (aiohttp)"
    if proxy is None:
        return transport, None
    return transport, f"requests go through the proxy {proxy.shown} ({scheme.upper()}_PROXY; NO_PROXY bypasses it)"


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection. Reads queue in ``pending`` with their arrival times; the reader
    moves them into ``buf`` one at a time (``pull``) and waits on ``wait``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.pending: deque[tuple[bytes, int]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False  # the peer ended it, or it broke
        self.error: BaseException | None = None
        self.last_rx = 0.0  # loop.time() of the last bytes (or of the request's write)
        self._idle_s: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pending.append((data, _NS()))
        self.last_rx = self.loop.time()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._end(None)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        self.closed = True
        self.error = self.error or exc
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # the reader's side
    def pull(self) -> int | None:
        """Move the oldest queued read into ``buf``, with the reads that came within ``COALESCE_NS`` of
        it; the arrival time of the last of them, or None when none is queued. Parsing a burst of reads
        at once costs one pass instead of one per read (a saturated client finds many queued), and
        moves no event's time by more than COALESCE_NS."""
        pending = self.pending
        if not pending:
            return None
        data, t = pending.popleft()
        self.buf += data
        first = t
        while pending and pending[0][1] - first <= COALESCE_NS:
            data, t = pending.popleft()
            self.buf += data
        return t

    def start_response(self, idle_s: float | None) -> None:
        """A request was just written: the silence allowed before each read is ``idle_s``."""
        self.last_rx = self.loop.time()
        self._idle_s = idle_s

    async def wait(self) -> None:
        """Until more bytes came, the connection ended, or it was silent for the idle timeout."""
        waiter = self.waiter = self.loop.create_future()
        if self._idle_s is not None and self._timer is None:
            self._timer = self.loop.call_at(self.last_rx + self._idle_s, self._check_idle)
        try:
            await waiter
        finally:
            self.waiter = None

    async def next_read(self, what: str) -> int:
        """The arrival time of the next read, moved into ``buf``; raises when the connection ended first."""
        while (t := self.pull()) is None:
            if self.closed:
                raise self.broken(what)
            await self.wait()
        return t

    def _check_idle(self) -> None:
        self._timer = None
        waiter, idle = self.waiter, self._idle_s
        if idle is None:
            return
        due = self.last_rx + idle
        if self.loop.time() < due:  # bytes came since it was armed: re-arm for the rest
            self._timer = self.loop.call_at(due, self._check_idle)
        elif waiter is not None and not waiter.done():
            waiter.set_exception(httpx2.ReadTimeout(f"no data for {idle:g} s"))

    def end_response(self) -> None:
        self._idle_s = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.end_response()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        return (
            not self.closed
            and not self.buf
            and not self.pending
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def broken(self, what: str) -> httpx2.TransportError:
        """The error for a connection that ended while ``what`` was awaited, caused by its own error."""
        err: httpx2.TransportError
        if isinstance(self.error, OSError):
            err = httpx2.ReadError(f"{what}: {self.error}")
        else:
            err = httpx2.RemoteProtocolError(f"server closed the connection during {what}")
        err.__cause__ = self.error
        return err


async def read_head(conn: Connection) -> tuple[bytes, int]:
    """A response's status line and headers (without the blank line) and the arrival time of the read
    that completed them; what follows stays in ``conn.buf``."""
    t = 0
    while True:
        end = conn.buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(conn.buf[:end])
            del conn.buf[: end + 4]
            return head, t
        if len(conn.buf) > _MAX_HEAD:
            raise httpx2.RemoteProtocolError("response head too large")
        t = await conn.next_read("the response head")


async def open_connection(
    scheme: str, host: str, port: int, tls: ssl.SSLContext | None, proxy: Proxy | None, phases: Phases
) -> Connection:
    """A new connection to ``host:port`` (through ``proxy``'s tunnel for https), TLS on top when given.
    Stamps ``phases.connected`` and ``phases.tls``. Errors: ``httpx2.ConnectError`` caused by the original."""
    loop = asyncio.get_running_loop()
    peer = (proxy.host, proxy.port) if proxy is not None else (host, port)
    try:
        _, conn = await loop.create_connection(lambda: Connection(loop), *peer)
    except OSError as e:
        via = f" through the proxy {proxy.shown}" if proxy is not None else ""
        raise httpx2.ConnectError(f"cannot connect to {host}:{port}{via}: {e.strerror or e}") from e
    try:
        if proxy is not None and scheme == "https":
            await _tunnel(conn, host, port, proxy)
        phases.connected = _NS()
        if tls is not None:
            await _start_tls(conn, loop, tls, host, port)
            phases.tls = _NS()
    except BaseException:
        conn.close()
        raise
    return conn


async def _tunnel(conn: Connection, host: str, port: int, proxy: Proxy) -> None:
    """``CONNECT host:port`` through the proxy; the connection is then a tunnel to the target."""
    assert conn.transport is not None
    lines = [b"CONNECT %s:%d HTTP/1.1" % (host.encode(), port), b"Host: %s:%d" % (host.encode(), port)]
    if proxy.authorization:
        lines.append(b"Proxy-Authorization: " + proxy.authorization)
    conn.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")
    head, _ = await read_head(conn)
    status_line = head.split(b"\r\n", 1)[0]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].startswith(b"2"):
        shown = status_line[:80].decode("latin-1")
        raise httpx2.ProxyError(f"the proxy {proxy.shown} refused a tunnel to {host}:{port}: {shown}")
    conn.buf.clear()


async def _start_tls(
    conn: Connection, loop: asyncio.AbstractEventLoop, tls: ssl.SSLContext, host: str, port: int
) -> None:
    assert conn.transport is not None
    try:
        transport = await loop.start_tls(conn.transport, conn, tls, server_hostname=host)
    except (ssl.SSLError, ConnectionError) as e:
        reason = getattr(e, "verify_message", None) or getattr(e, "reason", None) or e
        raise httpx2.ConnectError(f"TLS handshake with {host}:{port} failed: {reason}") from e
    if transport is None:  # the peer closed during the handshake
        raise httpx2.ConnectError(f"TLS handshake with {host}:{port} failed: connection closed")
    conn.transport = transport  # type: ignore[assignment]
