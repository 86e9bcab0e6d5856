"""loadtest's HTTP/1.1 transport (h1.py) against scripted servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest
import trustme

from loadtest.transport.h1 import H1Body, H1Transport
from loadtest.transport.netconn import Connection
from loadtest.transport.phases import PHASES_EXTENSION, Phases

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on 127.0.0.1 running ``handler`` per connection; yields its URL and a list that
    counts connections (one entry per accepted connection)."""
    conns: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", conns
    finally:
        srv.close()
        await srv.wait_closed()


@contextlib.asynccontextmanager
async def h1_client(
    handler: Handler, max_connections: int = 4
) -> AsyncIterator[tuple[str, list[int], httpx2.AsyncClient]]:
    """The scripted server, and an httpx2 client on H1Transport to talk to it."""
    transport = H1Transport(max_connections=max_connections)
    async with server(handler) as (url, conns), httpx2.AsyncClient(transport=transport) as client:
        yield url, conns, client


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: its head and its body (content-length framed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def respond(*parts: bytes) -> Handler:
    """Answer every request on the connection with ``parts`` written one by one."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            for part in parts:
                writer.write(part)
                await writer.drain()

    return handler


CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    b"6\r\ndata: \r\n",
    b"5;ext=1\r\nhello\r\n",
    b"0\r\n\r\n",
)


async def _get(client: httpx2.AsyncClient, url: str, **kw: object) -> tuple[httpx2.Response, bytes]:
    resp = await client.post(url + "/v1/x", content=b'{"a": 1}', **kw)  # type: ignore[arg-type]
    return resp, resp.content


async def test_chunked_body_and_keep_alive_reuse() -> None:
    async with h1_client(respond(*CHUNKED), max_connections=4) as (url, conns, client):
        for _ in range(3):
            resp, body = await _get(client, url)
            assert resp.status_code == 200 and body == b"data: hello"
            assert resp.headers["content-type"] == "text/event-stream"
    assert len(conns) == 1  # one connection carried all three


def _feed_chunks(pieces: list[bytes]) -> bytes:
    """Run the chunked parser over ``pieces`` arriving one by one (any split of the bytes)."""
    conn = Connection(asyncio.new_event_loop())
    released: list[bool] = []

    class _Pool:
        def _release(self, origin: object, c: object, *, reuse: bool) -> None:
            released.append(reuse)

    body = H1Body(_Pool(), ("http", "h", 80), conn, "chunked", 0, True)  # type: ignore[arg-type]
    out = b""
    for piece in pieces:
        conn.data_received(piece)
        conn.pull()
        out += body._chunks()
    assert body.done and conn.buf == bytearray()
    conn.loop.close()
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_chunked_parser_takes_any_split(size: int) -> None:
    wire = b"4\r\nabcd\r\nA;name=v\r\n0123456789\r\n1\r\nZ\r\n0\r\nx-trailer: 1\r\n\r\n"
    pieces = [wire[i : i + size] for i in range(0, len(wire), size)]
    assert _feed_chunks(pieces) == b"abcd0123456789Z"


def test_malformed_chunk_size_is_a_protocol_error() -> None:
    with pytest.raises(httpx2.RemoteProtocolError, match="bad chunk size"):
        _feed_chunks([b"zz\r\nabc\r\n0\r\n\r\n"])


async def test_content_length_body_and_connection_close() -> None:
    async with h1_client(respond(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")) as (url, conns, client):
        assert (await _get(client, url))[1] == b"hello"
        assert (await _get(client, url))[1] == b"hello"
    assert len(conns) == 1
    close = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    async with h1_client(respond(close)) as (url, conns, client):
        assert (await _get(client, url))[1] == b"ok"
        assert (await _get(client, url))[1] == b"ok"
    assert len(conns) == 2  # the server said close: a new connection for the next request


async def test_body_read_to_the_end_of_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        await writer.drain()
        writer.close()

    async with h1_client(handler) as (url, _, client):
        assert (await _get(client, url))[1] == b"part one, part two"


async def test_no_body_for_204_and_head_and_interim_responses_are_skipped() -> None:
    async with h1_client(respond(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")) as (
        url,
        conns,
        client,
    ):
        for _ in range(2):
            resp, body = await _get(client, url)
            assert resp.status_code == 204 and body == b""
    assert len(conns) == 1


async def test_idle_timeout_while_the_server_is_silent() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED[0] + CHUNKED[1])
        await writer.drain()
        await release.wait()  # silent until the test ends

    async with h1_client(handler) as (url, _, client):
        async with client.stream("POST", url, content=b"x", timeout=httpx2.Timeout(5.0, read=0.2)) as resp:
            got = []
            with pytest.raises(httpx2.ReadTimeout):
                async for piece in resp.aiter_raw():
                    got.append(piece)
            assert got == [b"data: "]  # what came before the silence was delivered
        release.set()


async def test_connection_refused_is_a_connect_error_with_its_cause() -> None:
    async with server(respond(b"")) as (url, _):
        pass  # closed: nothing listens on that port now
    async with httpx2.AsyncClient(transport=H1Transport()) as client:
        with pytest.raises(httpx2.ConnectError) as info:
            await _get(client, url)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_server_closing_mid_body_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED[0] + CHUNKED[1])
        await writer.drain()
        writer.close()

    async with h1_client(handler) as (url, _, client):
        with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
            await _get(client, url)


async def test_malformed_status_line() -> None:
    async with h1_client(respond(b"HTTP/1.1 OK\r\n\r\n")) as (url, _, client):
        with pytest.raises(httpx2.RemoteProtocolError, match="malformed status line"):
            await _get(client, url)


async def test_at_most_max_connections_and_a_stream_body_is_sent_with_its_length() -> None:
    gate = asyncio.Event()
    in_flight, peak, bodies = [0], [0], []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            bodies.append(body)
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            if in_flight[0] == 2:
                gate.set()  # two requests are being served at once: let them answer
            await gate.wait()
            in_flight[0] -= 1
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def stream() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    async with h1_client(handler, max_connections=2) as (url, conns, client):
        results = await asyncio.gather(*(client.post(url, content=stream()) for _ in range(5)))
    assert [r.content for r in results] == [b"ok"] * 5
    assert peak[0] == 2 and len(conns) == 2 and bodies == [b"abcd"] * 5


async def test_closing_a_stream_early_drops_its_connection_and_the_phases_are_stamped() -> None:
    rest = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(CHUNKED[0] + CHUNKED[1])
            await writer.drain()
            await rest.wait()  # the rest of the body only once the client has left the first response
            writer.write(CHUNKED[2] + CHUNKED[3])
            await writer.drain()

    async with h1_client(handler) as (url, conns, client):
        phases = Phases(issued=time.perf_counter_ns())
        async with client.stream("POST", url, content=b"x", extensions={PHASES_EXTENSION: phases}) as resp:
            assert phases.new_connection and phases.issued <= phases.slot <= phases.connected
            assert phases.connected <= phases.written <= phases.head and phases.tls == 0  # plain http
            async for _ in resp.aiter_raw():
                break  # leave the body unread
        rest.set()
        assert (await _get(client, url))[1] == b"data: hello"
    assert len(conns) == 2  # a half-read connection is never reused


async def test_https_with_a_trusted_certificate_and_a_refused_one() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret")
                await writer.drain()
        writer.close()

    srv = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    try:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        async with httpx2.AsyncClient(transport=H1Transport(ssl_context=trusting)) as client:
            assert (await _get(client, url))[1] == b"secret"
        async with httpx2.AsyncClient(transport=H1Transport()) as client:  # the system's CAs: not this one
            with pytest.raises(httpx2.ConnectError) as info:
                await _get(client, url)
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        srv.close()
        await srv.wait_closed()


async def test_a_malformed_content_length_closes_the_socket() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 12abc\r\n\r\nhello")
        await writer.drain()
        if await reader.read() == b"":  # the client hung up: it did not keep the socket for reuse
            closed.set()

    async with h1_client(handler) as (url, _, client):
        with pytest.raises(httpx2.RemoteProtocolError, match="malformed content-length"):
            await _get(client, url)
        await asyncio.wait_for(closed.wait(), 5)


async def test_a_peer_closing_inside_a_chunk_size_line_ends_the_request_at_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED[0] + CHUNKED[1] + b"1")  # half a size line, then gone
        await writer.drain()

    async with h1_client(handler) as (url, _, client):
        # the idle timeout is 60 s: the broken body must be seen when the peer closes, not then
        with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
            await asyncio.wait_for(_get(client, url, timeout=httpx2.Timeout(60.0)), 5)


async def test_a_close_delimited_body_cut_by_a_reset_is_broken_not_complete() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\npart one")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        writer.transport.abort()

    async with h1_client(handler) as (url, _, client):
        with pytest.raises(httpx2.ReadError):
            await _get(client, url)


async def test_each_read_keeps_the_time_it_arrived_however_late_the_parser_runs() -> None:
    loop = asyncio.get_running_loop()
    conn = Connection(loop)
    body = H1Body(H1Transport(), ("http", "h", 80), conn, "chunked", 0, True)
    stamps = []
    for part in (b"5\r\nfirst\r\n", b"6\r\nsecond\r\n0\r\n\r\n"):
        before = time.perf_counter_ns()
        conn.data_received(part)
        stamps.append((before, time.perf_counter_ns()))
        spin_until = time.perf_counter_ns() + 20_000_000  # a busy loop: the reader runs 20 ms later
        while time.perf_counter_ns() < spin_until:
            pass
    got = [(piece, body.read_ns) async for piece in body]
    assert [p for p, _ in got] == [b"first", b"second"]
    for (_, t), (lo, hi) in zip(got, stamps, strict=True):
        assert lo <= t <= hi  # the moment of the read, not the parser's (20-40 ms later)
