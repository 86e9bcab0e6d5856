"""HTTP/1.1 for the hot path: an ``httpx2`` transport on asyncio protocols.

``AsyncOpenAI`` sends through an ``httpx2`` client; this is the transport under it (the SDK's
aiohttp transport remains a scenario setting: ``target.transport: aiohttp``). It does what a load
generator's request needs and no more, with one Python layer between a socket read and the
caller, where aiohttp's stream reader, its flow control, its per-read timeout reschedule and two
async-iterator wrappers sat (README: the figures):

- keep-alive connections per origin, at most ``max_connections`` in use (``timeout["pool"]``);
  an idle one the server has closed is never reused, and nothing is retried: a load test
  reports what the server did;
- http and https (``httpx2.create_ssl_context``: certifi, ``SSL_CERT_FILE``), no proxies;
- response bodies framed by ``chunked``, ``content-length`` or the connection's end; compressed
  bodies pass through raw (``httpx2`` decodes them);
- timeouts: ``connect``, and ``read`` as the longest silence while a response is awaited (one
  timer per response, re-armed only when it fires);
- errors as ``httpx2`` exceptions caused by the original ``OSError``/``TimeoutError``;
- ``request.extensions["loadtest_sent_ns"]``: ``perf_counter_ns()`` as the request is written.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx2

__all__ = ["SENT_EXTENSION", "H1Transport"]

SENT_EXTENSION = "loadtest_sent_ns"
_MAX_HEAD = 64 * 1024  # status line and headers of a response
_MAX_SIZE_LINE = 1024  # a chunk's size line
_NO_BODY_STATUS = (204, 304)

Origin = tuple[str, str, int]  # scheme, host, port


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes arrive into ``buf``; a reader waits on ``wait``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
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
        self.buf += data
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
        return not self.closed and not self.buf and self.transport is not None and not self.transport.is_closing()

    def broken(self, what: str) -> httpx2.TransportError:
        """The error for a connection that ended while ``what`` was awaited, caused by its own error."""
        err: httpx2.TransportError
        if isinstance(self.error, OSError):
            err = httpx2.ReadError(f"{what}: {self.error}")
        else:
            err = httpx2.RemoteProtocolError(f"server closed the connection during {what}")
        err.__cause__ = self.error
        return err


class _Body(httpx2.AsyncByteStream):
    """A response body read from its connection; the connection goes back to the pool at its end."""

    def __init__(
        self,
        transport: H1Transport,
        origin: Origin,
        conn: _Connection,
        framing: Literal["chunked", "length", "close", "none"],
        length: int,
        keep_alive: bool,
    ) -> None:
        self.transport, self.origin, self.conn = transport, origin, conn
        self.framing, self.left, self.keep_alive = framing, length, keep_alive
        self.state: Literal["size", "data", "crlf", "trailers"] = "size"
        self.done = framing == "none"
        self.released = False
        if self.done:
            self._release()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self.conn
        try:
            while not self.done:
                if self.framing == "chunked":
                    piece = self._chunks()
                elif self.framing == "length":
                    piece = bytes(conn.buf[: self.left])
                    del conn.buf[: len(piece)]
                    self.left -= len(piece)
                    self.done = self.left == 0
                else:  # until the connection ends
                    piece = bytes(conn.buf)
                    conn.buf.clear()
                    self.done = conn.closed
                if piece:
                    yield piece
                if self.done:
                    break
                if conn.closed and not conn.buf:
                    raise conn.broken("the response body")
                await conn.wait()
        finally:
            self._release()

    def _chunks(self) -> bytes:
        """Every whole piece of chunk data now in the buffer (``done`` after the last chunk)."""
        buf = self.conn.buf
        pos, out = 0, []
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
    """HTTP/1.1 keep-alive connections on asyncio protocols (see the module's docstring)."""

    def __init__(self, *, max_connections: int = 100, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_connections = max_connections
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx2.create_ssl_context()
        return self._ssl

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        origin: Origin = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        message = await _message(request)
        method = request.method.encode()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        await self._take_slot(timeouts.get("pool"))
        try:
            conn = await self._connection(origin, timeouts.get("connect"))
            try:
                request.extensions[SENT_EXTENSION] = time.perf_counter_ns()
                conn.start_response(timeouts.get("read"))
                assert conn.transport is not None
                conn.transport.write(message)
                version, status, reason, headers = await self._read_head(conn)
            except BaseException:  # cancelled or failed: this connection is done
                conn.close()
                raise
            framing, length, keep_alive = _framing(method, status, version, headers)
            body = _Body(self, origin, conn, framing, length, keep_alive)
            extensions: dict[str, Any] = {"http_version": version, "reason_phrase": reason}
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

    async def _connection(self, origin: Origin, connect_timeout: float | None) -> _Connection:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
            conn.close()
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop), host, port, ssl=tls, server_hostname=host if tls else None
                ),
                connect_timeout,
            )
        except (TimeoutError, asyncio.TimeoutError) as e:
            raise httpx2.ConnectTimeout(f"no connection to {host}:{port} within {connect_timeout:g} s") from e
        except OSError as e:
            raise httpx2.ConnectError(f"cannot connect to {host}:{port}: {e.strerror or e}") from e
        return conn

    @staticmethod
    async def _read_head(conn: _Connection) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
        while True:
            end = conn.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(conn.buf[:end])
                del conn.buf[: end + 4]
                version, status, reason, headers = _split_head(head)
                if 100 <= status < 200 and status != 101:  # 100 Continue, 103 Early Hints: the answer follows
                    continue
                return version, status, reason, headers
            if len(conn.buf) > _MAX_HEAD:
                raise httpx2.RemoteProtocolError("response head too large")
            if conn.closed:
                raise conn.broken("the response head")
            await conn.wait()

    def _release(self, origin: Origin, conn: _Connection, *, reuse: bool) -> None:
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


async def _message(request: httpx2.Request) -> bytes:
    """The request's bytes on the wire: request line, headers, body (read whole)."""
    try:
        body = request.content
        raw = request.headers.raw
    except httpx2.RequestNotRead:
        body = await request.aread()
        raw = [(k, v) for k, v in request.headers.raw if k.lower() != b"transfer-encoding"]
        raw.append((b"Content-Length", str(len(body)).encode()))
    target = request.url.raw_path or b"/"
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), target)]
    lines += [k + b": " + v for k, v in raw]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
