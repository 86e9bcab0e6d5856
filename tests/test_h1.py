"""loadtest's HTTP/1.1 transport (h1.py) against scripted servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest
import trustme

from loadtest.h1 import SENT_EXTENSION, H1Transport, _Body, _Connection

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
    conn = _Connection(asyncio.new_event_loop())
    released: list[bool] = []

    class _Pool:
        def _release(self, origin: object, c: object, *, reuse: bool) -> None:
            released.append(reuse)

    body = _Body(_Pool(), ("http", "h", 80), conn, "chunked", 0, True)  # type: ignore[arg-type]
    out = b""
    for piece in pieces:
        conn.data_received(piece)
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


async def test_closing_a_stream_early_drops_its_connection_and_sent_is_stamped() -> None:
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
        async with client.stream("POST", url, content=b"x") as resp:
            assert SENT_EXTENSION in resp.request.extensions
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
