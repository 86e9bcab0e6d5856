"""A forward HTTP proxy on 127.0.0.1 for tests, in its own thread: ``CONNECT`` tunnels (https targets)
and absolute-form requests (http targets), as squid and corporate proxies serve them. It counts
what it carried, can require ``Proxy-Authorization``, and can hold each new tunnel for a while
(a slow proxy), so a test knows how long a handshake took from the proxy's side, not the client's."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class ProxyStats:
    tunnels: int = 0  # CONNECT tunnels opened
    forwarded: int = 0  # absolute-form requests forwarded
    refused: int = 0  # answered 407
    targets: list[str] = field(default_factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, RuntimeError):
        writer.close()


class _Proxy:
    def __init__(self, auth: tuple[str, str] | None, connect_delay_s: float) -> None:
        self.stats = ProxyStats()
        self.expected = None if auth is None else b"Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode())
        self.delay = connect_delay_s

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:] if ln)}
        if self.expected is not None and headers.get(b"proxy-authorization") != self.expected:
            self.stats.refused += 1
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        self.stats.targets.append(target.decode())
        if method == b"CONNECT":
            host, _, port = target.decode().rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self.stats.tunnels += 1
            await asyncio.sleep(self.delay)  # a slow proxy: the tunnel is up only after this
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        url = urlsplit(target.decode())  # absolute form: forward as origin form, then relay both ways
        up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
        self.stats.forwarded += 1
        kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith(b"proxy-authorization")]
        path = (url.path or "/").encode() + (b"?" + url.query.encode() if url.query else b"")
        up_writer.write(b"\r\n".join([method + b" " + path + b" HTTP/1.1", *kept]) + b"\r\n\r\n")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


@contextlib.contextmanager
def run_proxy(auth: tuple[str, str] | None = None, connect_delay_s: float = 0.0) -> Iterator[tuple[int, ProxyStats]]:
    """Start the proxy on a free port of 127.0.0.1; yields its port and its live counts.

    Each client connection carries one tunnel, or forwarded requests to one origin (enough for
    loadtest, which keeps a connection per origin)."""
    proxy = _Proxy(auth, connect_delay_s)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []
    stop = asyncio.Event()

    async def main() -> None:
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        await stop.wait()
        server.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the test proxy did not start"
    try:
        yield port[0], proxy.stats
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
