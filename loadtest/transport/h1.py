"""HTTP/1.1 for the hot path: an ``httpx2`` transport on asyncio protocols.

``AsyncOpenAI`` sends through an ``httpx2`` client; this is the transport under it (the SDK's
aiohttp transport remains a scenario setting: ``target.transport: aiohttp``). It does what a load
generator's request needs and no more, with one Python layer between a socket read and the
caller, where aiohttp's stream reader, its flow control, its per-read timeout reschedule and two
async-iterator wrappers sat (README: the figures):

- keep-alive connections per origin, at most ``max_connections`` in use (``timeout["pool"]``);
  an idle one the server has closed is never reused, and nothing is retried: a load test
  reports what the server did;
- http and https (an ``ssl.SSLContext`` from ``target.tls``), through an ``http://`` proxy from
  the environment (``netconn.py``: a CONNECT tunnel for https, absolute-form requests for http);
- response bodies framed by ``chunked``, ``content-length`` or the connection's end; compressed
  bodies pass through raw (``httpx2`` decodes them);
- timeouts: ``connect`` (TCP, the proxy's tunnel and TLS together), and ``read`` as the longest
  silence while a response is awaited (one timer per response, re-armed only when it fires);
- errors as ``httpx2`` exceptions caused by the original ``OSError``/``TimeoutError``;
- the phases of ``request.extensions["loadtest_phases"]`` (``phases.py``) stamped as they happen;
  a body's ``read_ns`` is the arrival time of the read that carried its latest piece.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx2

from loadtest.transport.netconn import Connection, Proxy, env_proxy, open_connection, read_head
from loadtest.transport.phases import PHASES_EXTENSION, Phases

__all__ = ["BODY_EXTENSION", "H1Body", "H1Transport"]

_NS = time.perf_counter_ns
_MAX_SIZE_LINE = 1024  # a chunk's size line
_NO_BODY_STATUS = (204, 304)
# The response's own H1Body, for its arrival stamps: httpx2's client wraps ``response.stream`` in a
# BoundAsyncStream of its own, so the body is handed over in the response's extensions too.
BODY_EXTENSION = "loadtest_h1_body"

Origin = tuple[str, str, int]  # scheme, host, port


class H1Body(httpx2.AsyncByteStream):
    """A response body read from its connection; the connection goes back to the pool at its end."""

    def __init__(
        self,
        transport: H1Transport,
        origin: Origin,
        conn: Connection,
        framing: Literal["chunked", "length", "close", "none"],
        length: int,
        keep_alive: bool,
    ) -> None:
        self.transport, self.origin, self.conn = transport, origin, conn
        self.framing, self.left, self.keep_alive = framing, length, keep_alive
        self.state: Literal["size", "data", "crlf", "trailers"] = "size"
        self.read_ns = 0  # perf_counter_ns of the read that carried the latest piece (set by the transport)
        self.done = framing == "none"
        self.released = False
        if self.done:
            self._release()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self.conn
        try:
            while not self.done:  # the bytes that came with the head first, then one read at a time
                piece = self._take()
                if piece:
                    yield piece
                if self.done:
                    break
                t = conn.pull()
                while t is None:
                    if conn.closed:
                        if self.framing == "close" and conn.error is None:  # a clean end is the body's end
                            return
                        raise conn.broken("the response body")
                    await conn.wait()
                    t = conn.pull()
                self.read_ns = t
        finally:
            self._release()

    def _take(self) -> bytes:
        """The body bytes now in the buffer (``done`` when the body is complete)."""
        buf = self.conn.buf
        if self.framing == "chunked":
            return self._chunks()
        if self.framing == "length":
            piece = bytes(buf[: self.left])
            del buf[: len(piece)]
            self.left -= len(piece)
            self.done = self.left == 0
            return piece
        piece = bytes(buf)  # until the connection ends
        buf.clear()
        return piece

    def _chunks(self) -> bytes:
        """Every whole piece of chunk data now in the buffer (``done`` after the last chunk)."""
        buf = self.conn.buf
        pos, out = self._whole_chunks(buf) if self.state == "size" else (0, [])
        while True:
            if self.state == "size":
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > _MAX_SIZE_LINE:
                        raise httpx2.RemoteProtocolError("malformed chunked body: size line too long")
                    break
                try:
                    size = int(bytes(buf[pos:end]).split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise httpx2.RemoteProtocolError("malformed chunked body: bad chunk size") from None
                pos = end + 2
                self.left, self.state = size, ("data" if size else "trailers")
            elif self.state == "data":
                take = min(self.left, len(buf) - pos)
                if take:
                    out.append(buf[pos : pos + take])
                    pos += take
                    self.left -= take
                if self.left:
                    break
                self.state = "crlf"
            elif self.state == "crlf":
                if len(buf) - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise httpx2.RemoteProtocolError("malformed chunked body: no CRLF after chunk data")
                pos += 2
                self.state = "size"
            else:  # trailers: header lines, then an empty line
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                blank = end == pos
                pos = end + 2
                if blank:
                    self.done = True
                    break
        del buf[:pos]
        return b"".join(out)

    @staticmethod
    def _whole_chunks(buf: bytearray) -> tuple[int, list[bytes]]:
        """The common case first: whole chunks (size line, data, CRLF) back to back, each cut out of
        one copy of the buffer; stops at the first chunk not whole (or with an extension, or the last
        one), which the state machine in ``_chunks`` takes from the returned position."""
        data = bytes(buf)
        pos, out, n = 0, [], len(data)
        while True:
            end = data.find(b"\r\n", pos, pos + _MAX_SIZE_LINE)
            if end < 0:
                return pos, out
            try:
                size = int(data[pos:end], 16)
            except ValueError:  # an extension (;name=value) or a bad size: the state machine decides
                return pos, out
            stop = end + 2 + size
            if size <= 0 or stop + 2 > n or data[stop : stop + 2] != b"\r\n":
                return pos, out
            out.append(data[end + 2 : stop])
            pos = stop + 2

    def _release(self) -> None:
        if not self.released:
            self.released = True
            self.conn.end_response()
            self.transport._release(self.origin, self.conn, reuse=self.done and self.keep_alive)

    async def aclose(self) -> None:
        self._release()


def _split_head(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    """``HTTP/1.1 200 OK`` and header lines -> version, status, reason, headers."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx2.RemoteProtocolError(f"malformed status line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx2.RemoteProtocolError(f"malformed header line: {line[:80]!r}")
        headers.append((name, value.strip()))
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


def _framing(
    method: bytes, status: int, version: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[Literal["chunked", "length", "close", "none"], int, bool]:
    """How the body is delimited, its length, and whether the connection can carry another request."""
    chunked, length, keep_alive = False, -1, version == b"HTTP/1.1"
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
        elif lower == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise httpx2.RemoteProtocolError(f"malformed content-length: {value[:40]!r}") from None
        elif lower == b"connection":
            tokens = value.lower()
            keep_alive = b"close" not in tokens and (keep_alive or b"keep-alive" in tokens)
    if method == b"HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
        return "none", 0, keep_alive
    if chunked:
        return "chunked", 0, keep_alive
    if length >= 0:
        return ("length" if length else "none"), length, keep_alive
    return "close", 0, False


class H1Transport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections on asyncio protocols (see the module's docstring).

    ``trust_env``: take proxies from the environment (``netconn.env_proxy``); ``ssl_context``: how
    https is verified (default: ``httpx2.create_ssl_context()``, certifi and ``SSL_CERT_FILE``)."""

    def __init__(
        self, *, max_connections: int = 100, ssl_context: ssl.SSLContext | None = None, trust_env: bool = True
    ) -> None:
        self.max_connections = max_connections
        self._ssl = ssl_context
        self._trust_env = trust_env
        self._proxies: dict[Origin, Proxy | None] = {}
        self._idle: dict[Origin, list[Connection]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx2.create_ssl_context()
        return self._ssl

    def proxy(self, origin: Origin) -> Proxy | None:
        """The proxy for ``origin`` (read from the environment once per origin)."""
        if origin not in self._proxies:
            self._proxies[origin] = env_proxy(*origin) if self._trust_env else None
        return self._proxies[origin]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        ext = request.extensions
        phases: Phases = ext.get(PHASES_EXTENSION) or Phases(issued=_NS())
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        origin: Origin = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts: dict[str, float | None] = ext.get("timeout") or {}
        proxy = self.proxy(origin)
        message = await _message(request, proxy if scheme == "http" else None)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        await self._take_slot(timeouts.get("pool"))
        phases.slot = _NS()
        try:
            conn = await self._connection(origin, proxy, timeouts.get("connect"), phases)
            try:
                conn.start_response(timeouts.get("read"))
                assert conn.transport is not None
                conn.transport.write(message)
                phases.written = _NS()
                version, status, reason, headers, phases.head = await _response_head(conn)
                framing, length, keep_alive = _framing(request.method.encode(), status, version, headers)
            except BaseException:  # cancelled or failed: this connection is done
                conn.close()
                raise
            body = H1Body(self, origin, conn, framing, length, keep_alive)
            body.read_ns = phases.head
            extensions: dict[str, Any] = {"http_version": version, "reason_phrase": reason, BODY_EXTENSION: body}
            return httpx2.Response(status, headers=headers, stream=body, request=request, extensions=extensions)
        except BaseException:
            self._slots.release()
            raise

    async def _take_slot(self, pool_timeout: float | None) -> None:
        assert self._slots is not None
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), pool_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise httpx2.PoolTimeout(f"no free connection within {pool_timeout:g} s") from None

    async def _connection(
        self, origin: Origin, proxy: Proxy | None, connect_timeout: float | None, phases: Phases
    ) -> Connection:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.reusable():
                phases.connected = phases.slot
                return conn
            conn.close()
        scheme, host, port = origin
        phases.new_connection = True
        tls = self._ssl_context() if scheme == "https" else None
        try:
            return await asyncio.wait_for(open_connection(scheme, host, port, tls, proxy, phases), connect_timeout)
        except (TimeoutError, asyncio.TimeoutError) as e:
            raise httpx2.ConnectTimeout(f"no connection to {host}:{port} within {connect_timeout:g} s") from e

    def _release(self, origin: Origin, conn: Connection, *, reuse: bool) -> None:
        if reuse and not self._closed and conn.reusable():
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.close()
        if self._slots is not None:
            self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


async def _response_head(conn: Connection) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]], int]:
    """Version, status, reason, headers and the arrival time of the head (1xx interim answers skipped)."""
    while True:
        head, t = await read_head(conn)
        version, status, reason, headers = _split_head(head)
        if not (100 <= status < 200 and status != 101):  # 100 Continue, 103 Early Hints: the answer follows
            return version, status, reason, headers, t


async def _message(request: httpx2.Request, proxy: Proxy | None = None) -> bytes:
    """The request's bytes on the wire: request line, headers, body (read whole). Through an http
    proxy, the request line carries the absolute URL, with the proxy's credentials in a header."""
    try:
        body = request.content
        raw = request.headers.raw
    except httpx2.RequestNotRead:
        body = await request.aread()
        raw = [(k, v) for k, v in request.headers.raw if k.lower() != b"transfer-encoding"]
        raw.append((b"Content-Length", str(len(body)).encode()))
    target = request.url.raw_path or b"/"
    if proxy is not None:
        url = request.url
        target = b"http://%s:%d%s" % (url.raw_host, url.port or 80, target)
        if proxy.authorization:
            raw = [*raw, (b"Proxy-Authorization", proxy.authorization)]
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), target)]
    lines += [k + b": " + v for k, v in raw]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
