"""A lean HTTP/1.1 client for the GenRM client: POST a JSON body to one URL over keep-alive connections.

Owns the connections to one endpoint: idle keep-alive connections kept for reuse, one request at a
time per connection, a response framed by Content-Length, the chunked transfer coding or the server
closing the connection, and a deadline per request (connect to last byte). Built on asyncio's
transports and the standard library only, because aiohttp's ClientSession spends ~0.3 ms of CPU per
request on generality judging does not use (BENCHMARKS.md, "GenRM client"). It deliberately does no
redirects, cookies, proxies, compression, streaming or retries, and knows nothing about chat
completions: `fapo.grm.client` decides what to send and what a response means.

    pool = ConnectionPool("http://127.0.0.1:8000/v1/chat/completions", {"Authorization": "Bearer k"})
    response = await pool.post(b'{"model": "genrm", ...}', timeout=60.0)   # Response(200, b'{...}', {...})
    pool.close()
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

MAX_HEAD_BYTES = 64 * 1024
"""Longest response status line plus headers accepted; anything longer is not an HTTP server talking."""

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Default bound on the bytes of one response (head, framing and body): more is an HttpProtocolError."""

_NO_BODY = frozenset({204, 304})


class HttpProtocolError(ConnectionError):
    """The peer's bytes are not a valid HTTP/1.x response (the connection is dropped)."""


@dataclass(frozen=True, slots=True)
class Response:
    """A complete HTTP response."""

    status: int
    body: bytes
    headers: dict[str, str]
    """Header names in lower case; the last value wins when a name repeats."""


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections to the origin of `url`, for POSTing JSON bodies to that URL.

    Connections are opened on demand, one per request in flight, and reused most-recent first;
    one idle longer than `idle_timeout` seconds is closed instead (set it below the server's
    keep-alive timeout, or a request may meet a connection the server is closing). `close()`
    drops every connection, failing requests in flight; a closed pool cannot be used again.
    A pool lives in one event loop.
    """

    def __init__(self, url: str, headers: Mapping[str, str] | None = None, idle_timeout: float = 4.0,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            target += f"?{parts.query}"
        fields = {
            "Host": parts.netloc.rpartition("@")[2],
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": "fapo",
            **(headers or {}),
        }
        for name, value in fields.items():
            if any(c in f"{name}{value}" for c in "\r\n\0"):
                raise ValueError(f"header {name!r} must not contain a line break or NUL")
        lines = [f"POST {target} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items()), "Content-Length: "]
        self._head = "\r\n".join(lines).encode("latin-1")  # the request's head up to the body's length
        self.idle_timeout = idle_timeout
        self.max_response_bytes = max_response_bytes
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False

    async def post(self, body: bytes, timeout: float) -> Response:
        """Send `body` and return the response, or raise OSError (HttpProtocolError is one) or
        asyncio.TimeoutError once `timeout` seconds have passed since the call."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = self._reuse(loop.time()) or await self._connect(loop, deadline)
        response = conn.send(b"".join((self._head, b"%d\r\n\r\n" % len(body), body)))
        timer = loop.call_at(deadline, _expire, response, timeout)
        try:
            result = await response
        except BaseException:  # failed, timed out or cancelled: the connection's state is unknown
            conn.abort()
            raise
        finally:
            timer.cancel()
        if conn.reusable and not self._closed:
            conn.idle_since = loop.time()
            self._idle.append(conn)
        else:
            conn.close()
        return result

    def close(self) -> None:
        """Close idle connections and abort those in flight (their requests fail with ConnectionError)."""
        self._closed = True
        self._idle.clear()
        for conn in list(self._open):
            conn.abort()

    def _reuse(self, now: float) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.is_open() and now - conn.idle_since < self.idle_timeout:
                return conn
            conn.close()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        if self._closed:
            raise ConnectionError("the connection pool is closed")
        connecting = loop.create_connection(
            lambda: _Connection(self._open, self.max_response_bytes), self._host, self._port, ssl=self._ssl
        )
        _, conn = await asyncio.wait_for(connecting, max(0.0, deadline - loop.time()))
        if self._closed:  # closed while connecting
            conn.abort()
            raise ConnectionError("the connection pool is closed")
        return conn


def _expire(response: asyncio.Future[Response], timeout: float) -> None:
    if not response.done():
        response.set_exception(asyncio.TimeoutError(f"no complete response within {timeout:g} s"))


class _Connection(asyncio.Protocol):
    """One connection: sends a request, then frames its response as the bytes arrive."""

    def __init__(self, registry: set[_Connection], max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self._registry = registry
        self._max_bytes = max_response_bytes
        self._received = 0  # bytes of the current response so far
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._response: asyncio.Future[Response] | None = None
        self._head: tuple[int, dict[str, str]] | None = None  # status and headers, once parsed
        self._length: int | None = None  # body bytes expected; None: chunked or until the connection closes
        self._chunked = False
        self._chunks: list[bytes] = []
        self._keep_alive = False
        self.reusable = False
        """Whether the last response left the connection ready for another request."""
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport
        self._registry.add(self)

    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, request: bytes) -> asyncio.Future[Response]:
        assert self._transport is not None and self._response is None
        self._response = response = asyncio.get_running_loop().create_future()
        self.reusable = False
        self._received = 0
        self._transport.write(request)
        return response

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None or response.done():  # bytes nobody asked for (or after a timeout)
            self.abort()
            return
        self._received += len(data)
        if self._received > self._max_bytes:  # never buffer an unbounded answer
            response.set_exception(HttpProtocolError(f"the response is larger than {self._max_bytes} bytes"))
            self.abort()
            return
        self._buffer += data
        try:
            result = self._parse()
        except HttpProtocolError as err:
            response.set_exception(err)
            return
        if result is not None:
            self._finish(result)

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        response = self._response
        if response is None or response.done():
            return
        if exc is None and self._head is not None and self._length is None and not self._chunked:
            self._finish(Response(self._head[0], bytes(self._buffer), self._head[1]))  # body ends at EOF
            return
        err = ConnectionResetError(
            f"the server closed the connection before the response was complete ({exc or 'EOF'})"
            if self._head is not None or self._buffer
            else f"the server closed the connection without a response ({exc or 'EOF'})"
        )
        response.set_exception(err)

    def _finish(self, result: Response) -> None:
        assert self._response is not None
        self.reusable = self._keep_alive and not self._buffer
        self._response.set_result(result)
        self._response, self._head, self._chunks = None, None, []
        self._buffer.clear()

    def _parse(self) -> Response | None:
        """The response once the buffer holds all of it; None while more bytes are due."""
        buf = self._buffer
        while self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise HttpProtocolError(f"no end of the response head in {len(buf)} bytes")
                return None
            status, headers, http11 = _parse_head(bytes(buf[:end]))
            del buf[: end + 4]
            if status >= 200:  # 1xx responses are interim (100 Continue, 103 Early Hints): skip them
                self._start_body(status, headers, http11)
        status, headers = self._head
        if self._chunked:
            body = self._dechunk()
            return None if body is None else Response(status, body, headers)
        if self._length is None or len(buf) < self._length:
            return None
        body = bytes(buf[: self._length])
        del buf[: self._length]
        return Response(status, body, headers)

    def _start_body(self, status: int, headers: dict[str, str], http11: bool) -> None:
        self._head = (status, headers)
        connection = headers.get("connection", "").lower()
        self._keep_alive = "close" not in connection if http11 else "keep-alive" in connection
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._length = None
        if status in _NO_BODY:
            self._length = 0
        elif not self._chunked and "content-length" in headers:
            self._length = _non_negative(headers["content-length"], "Content-Length")
        elif not self._chunked:
            self._keep_alive = False  # the body ends when the server closes the connection

    def _dechunk(self) -> bytes | None:
        """Consume complete chunks from the buffer; the whole body after the last chunk, else None."""
        buf = self._buffer
        while True:
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                return None
            size = _non_negative(bytes(buf[:line_end]).partition(b";")[0], "chunk size", base=16)
            data_start = line_end + 2
            if size == 0:  # last chunk, then optional trailer fields, then an empty line
                if buf[data_start : data_start + 2] == b"\r\n":
                    end = data_start + 2
                else:
                    trailers_end = buf.find(b"\r\n\r\n", line_end)
                    if trailers_end < 0:
                        return None
                    end = trailers_end + 4
                del buf[:end]
                return b"".join(self._chunks)
            if len(buf) < data_start + size + 2:
                return None
            if buf[data_start + size : data_start + size + 2] != b"\r\n":
                raise HttpProtocolError("a chunk does not end where its size says")
            self._chunks.append(bytes(buf[data_start : data_start + size]))
            del buf[: data_start + size + 2]


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """Status, headers (lower-case names) and whether the server speaks HTTP/1.1, from a response head."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
        raise HttpProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise HttpProtocolError(f"malformed header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(code), headers, version != "HTTP/1.0"


def _non_negative(text: str | bytes, what: str, base: int = 10) -> int:
    try:
        value = int(text, base)
    except ValueError:
        value = -1
    if value < 0:
        raise HttpProtocolError(f"invalid {what}: {text[:40]!r}")
    return value
