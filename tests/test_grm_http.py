"""The GenRM client's HTTP/1.1 connections (`fapo.grm.http`) against real loopback servers: a scripted
TCP server that answers with exact bytes (framing table, broken servers), and an aiohttp.web server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from fapo.grm.http import ConnectionPool, HttpProtocolError, Response


@dataclass
class Scripted:
    """Answers each request with the next reply: byte pieces sent apart (so they arrive in separate
    reads), then the connection is closed if `close` is set. With no reply left it stays silent."""

    replies: list[tuple[list[bytes], bool]]
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)  # (head, body)
    connections: int = 0
    closed: int = 0
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1/chat/completions"

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append((head, await reader.readexactly(length)))
                if not self.replies:  # wait, silent, until the client hangs up
                    await reader.read()
                    break
                pieces, close = self.replies.pop(0)
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.002)
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# (name, reply pieces, server closes after it, expected (status, body, reused)); a server that says it
# will close but lingers must still not get a second request on that connection
FRAMING = [
    ("content-length", [OK_HEAD + b"Content-Length: 7\r\n\r\n{\"a\":1}"], False, (200, b'{"a":1}', True)),
    ("byte by byte", split(OK_HEAD + b"Content-Length: 7\r\n\r\n{\"a\":1}", 1), False, (200, b'{"a":1}', True)),
    (
        "chunked, extension and trailer, split",
        split(
            OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n3;x=y\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nX-T: 1\r\n\r\n",
            5,
        ),
        False,
        (200, b'{"a":1}', True),
    ),
    ("chunked, one piece", [OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n"], False,
     (200, b'{"a":1}', True)),
    ("until the server closes", [OK_HEAD + b"\r\n{\"a\"", b":1}"], True, (200, b'{"a":1}', False)),
    ("HTTP/1.0", [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"], False, (200, b"{}", False)),
    ("HTTP/1.0 keep-alive", [b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}"], False,
     (200, b"{}", True)),
    ("Connection: close", [OK_HEAD + b"Connection: close\r\nContent-Length: 2\r\n\r\n{}"], False,
     (200, b"{}", False)),
    ("100 Continue first", [b"HTTP/1.1 100 Continue\r\n\r\n", OK_HEAD + b"Content-Length: 2\r\n\r\n{}"], False,
     (200, b"{}", True)),
    ("204 has no body", [b"HTTP/1.1 204 No Content\r\n\r\n"], False, (204, b"", True)),
    ("error status", [b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nbusy"], False,
     (429, b"busy", True)),
]  # fmt: skip


@pytest.mark.parametrize("pieces, close, expected", [f[1:] for f in FRAMING], ids=[f[0] for f in FRAMING])
def test_response_framing_and_connection_reuse(pieces, close, expected):
    async def scenario():
        server = Scripted([(pieces, close), (pieces, close)])
        pool = ConnectionPool(await server.start())
        try:
            first = await pool.post(b"{}", timeout=2)
            await asyncio.sleep(0.02)  # a closing server's FIN arrives
            second = await pool.post(b"{}", timeout=2)
            return first, second, server.connections
        finally:
            pool.close()
            await server.stop()

    status, body, reused = expected
    first, second, connections = asyncio.run(scenario())
    assert first == second and (first.status, first.body) == (status, body)
    assert connections == (1 if reused else 2)


def test_request_shape_and_headers():
    async def scenario():
        reply = b"HTTP/1.1 429 Busy\r\nRetry-After: 3\r\nX-Name :  v \r\nContent-Length: 0\r\n\r\n"
        server = Scripted([([reply], False)])
        url = (await server.start()).replace("127.0.0.1", "localhost")
        pool = ConnectionPool(url, {"Authorization": "Bearer k"})
        try:
            return await pool.post(b'{"model":"m"}', timeout=2), server.requests, url
        finally:
            pool.close()
            await server.stop()

    response, [(head, body)], url = asyncio.run(scenario())
    assert response == Response(429, b"", {"retry-after": "3", "x-name": "v", "content-length": "0"})
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1" and body == b'{"model":"m"}'
    assert {"Host: " + url.split("/")[2], "Authorization: Bearer k", "Content-Length: 13"} <= set(lines)
    assert "Content-Type: application/json" in lines and "Accept-Encoding: identity" in lines


BROKEN = [
    ("not HTTP", [b"hello there\r\n\r\n"], False, HttpProtocolError, "status line"),
    ("bad Content-Length", [OK_HEAD + b"Content-Length: -3\r\n\r\n"], False, HttpProtocolError, "Content-Length"),
    ("bad chunk size", [OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"], False, HttpProtocolError, "chunk"),
    ("chunk overruns its size", [OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\nab\r\n"], False,
     HttpProtocolError, "chunk"),
    ("endless head", [b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000], False, HttpProtocolError, "head"),
    ("closed mid-body", [OK_HEAD + b"Content-Length: 10\r\n\r\n{\"a\""], True, ConnectionResetError,
     "before the response was complete"),
    ("closed without a response", [], True, ConnectionResetError, "without a response"),
]  # fmt: skip


@pytest.mark.parametrize("pieces, close, error, message", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_servers_raise_connection_errors(pieces, close, error, message):
    async def scenario():
        server = Scripted([(pieces, close)])
        pool = ConnectionPool(await server.start())
        try:
            with pytest.raises(error, match=message):
                await pool.post(b"{}", timeout=2)
        finally:
            pool.close()
            await server.stop()

    asyncio.run(scenario())
    assert issubclass(error, OSError)  # the client retries OSErrors elsewhere


def test_timeout_drops_the_connection_and_refused_connections_raise():
    async def scenario():
        server = Scripted([])  # never answers
        url = await server.start()
        pool = ConnectionPool(url)
        try:
            with pytest.raises(asyncio.TimeoutError, match="within 0.1 s"):
                await pool.post(b"{}", timeout=0.1)
            await asyncio.sleep(0.05)
            dropped = server.closed
        finally:
            pool.close()
            await server.stop()
        with pytest.raises(ConnectionRefusedError):
            await ConnectionPool(url).post(b"{}", timeout=1)
        return dropped

    assert asyncio.run(scenario()) == 1


def test_idle_connections_expire_and_closed_ones_are_not_reused():
    ok = [OK_HEAD + b"Content-Length: 2\r\n\r\n{}"]

    async def scenario():
        server = Scripted([(ok, False), (ok, True), (ok, False), (ok, False)])
        pool = ConnectionPool(await server.start(), idle_timeout=0.1)
        try:
            await pool.post(b"{}", timeout=2)
            await asyncio.sleep(0.15)  # idle past idle_timeout: dropped, not reused
            await pool.post(b"{}", timeout=2)  # the server closes this one after answering
            await asyncio.sleep(0.02)
            await pool.post(b"{}", timeout=2)
            await pool.post(b"{}", timeout=2)
            return server.connections
        finally:
            pool.close()
            await server.stop()

    assert asyncio.run(scenario()) == 3


def test_close_and_cancel_end_requests_in_flight():
    async def scenario():
        server = Scripted([])
        pool = ConnectionPool(await server.start())
        try:
            waiting = asyncio.ensure_future(pool.post(b"{}", timeout=5))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await asyncio.sleep(0.05)
            cancelled_dropped = server.closed
            in_flight = asyncio.ensure_future(pool.post(b"{}", timeout=5))
            await asyncio.sleep(0.05)
            pool.close()
            with pytest.raises(ConnectionError):
                await in_flight
            with pytest.raises(ConnectionError, match="closed"):
                await pool.post(b"{}", timeout=5)
            return cancelled_dropped
        finally:
            pool.close()
            await server.stop()

    assert asyncio.run(scenario()) == 1


def test_header_values_cannot_forge_headers():
    with pytest.raises(ValueError, match="line break"):
        ConnectionPool("http://127.0.0.1:1/v1/chat/completions", {"Authorization": "Bearer k\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="http"):
        ConnectionPool("ftp://127.0.0.1:1/x")


def test_chunked_and_keep_alive_against_aiohttp_web():
    """A real server: aiohttp.web, chunked and Content-Length responses, many requests in flight."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.query.get("chunked"):
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for piece in (body[:3], body[3:]):
                await response.write(piece)
            await response.write_eof()
            return response
        return web.Response(body=body[::-1])

    async def scenario():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"
        plain, chunked = ConnectionPool(base), ConnectionPool(base + "?chunked=1")
        try:
            bodies = [f'{{"i":{i}}}'.encode() for i in range(50)]
            reversed_ = await asyncio.gather(*(plain.post(b, timeout=5) for b in bodies))
            echoed = await asyncio.gather(*(chunked.post(b, timeout=5) for b in bodies))
            return bodies, reversed_, echoed
        finally:
            plain.close()
            chunked.close()
            await runner.cleanup()

    bodies, reversed_, echoed = asyncio.run(scenario())
    assert [r.body for r in reversed_] == [b[::-1] for b in bodies]
    assert [r.body for r in echoed] == bodies and all(r.status == 200 for r in echoed)
