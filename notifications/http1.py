"""A small HTTP/1.1 keep-alive client for one origin, made for the push sender's many small POSTs.

One request per connection at a time (no pipelining), at most `limit` connections, each an asyncio protocol whose
answers httptools parses (uvicorn's C parser, which `uvicorn[standard]` brings; it understands chunked bodies).
A request is the bytes of the request line, the fixed headers and the body written with one `transport.write`,
and its answer a future resolved by the parser's callbacks: no task, no request or response object, no header
multidict per message. aiohttp cost about four times the CPU a message for the same exchange.

Errors: `ConnectError` when no connection could be made (nothing was sent), `TimeoutError` when the answer did
not come within `timeout` (the connection is closed: it may or may not have been handled), `TransportError` when
the connection broke or the answer could not be parsed. A connection idle for more than `idle_timeout` seconds is
closed rather than reused (servers commonly drop idle connections after 5 s), as is one the server asked to close.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

import httptools


class TransportError(Exception):
    """The connection broke, or the answer was not HTTP."""


class ConnectError(TransportError):
    """No connection could be made: the request was not sent."""


Answer = tuple[int, list[tuple[str, str]], bytes]  # status, headers (only of an answer that is not 2xx), body


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "parser", "waiter", "status", "headers", "body", "closed", "reusable", "last_used",
                 "timer", "_pool")

    def __init__(self, pool: Http1Pool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []  # raw; decoded only for an answer that is not 2xx
        self.body: list[bytes] = []
        self.closed = False
        self.reusable = True
        self.last_used = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # not for us: treat as broken
            self._fail(TransportError("unexpected protocol upgrade"))
        except httptools.HttpParserError as error:
            self._fail(TransportError(f"malformed HTTP answer: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(TransportError(f"connection closed before the answer: {exc or 'EOF'}"))
        self._pool._forget(self)

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.headers = []
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.reusable = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():  # an answer nobody asked for: this connection is not to be trusted
            self.reusable = False
            return
        status = self.status
        headers = [] if 200 <= status < 300 else [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.headers]
        waiter.set_result((status, headers, b"".join(self.body)))

    # --
    def _fail(self, error: Exception) -> None:
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)
        self.close()

    def _timed_out(self) -> None:
        self.timer = None
        self._fail(TimeoutError("no answer in time"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections to the origin of `url`, at most `limit` (so at most `limit` requests in flight)."""

    def __init__(self, url: str, *, limit: int, timeout: float, idle_timeout: float = 4.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {url}")
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        default_port = 443 if parts.scheme == "https" else 80
        self.host_header = self.host if self.port == default_port else f"{self.host}:{self.port}"
        self.limit = limit
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self._idle: deque[_Connection] = deque()
        self._open = 0
        self._slots = asyncio.Semaphore(limit)

    def request_head(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        """The request line and headers (without Content-Length), built once and reused for every request."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def request(self, head: bytes, body: bytes) -> Answer:
        """Send `head` (from `request_head`) + Content-Length + `body`; the answer's status, headers and body.

        Waits for a free connection when `limit` requests are in flight. The headers are given only for an answer
        that is not 2xx (the sender reads them for Retry-After and error details, never on the hot path).
        """
        async with self._slots:
            conn = await self._connection()
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[Answer] = loop.create_future()
            conn.waiter = waiter
            conn.timer = loop.call_later(self.timeout, conn._timed_out)
            assert conn.transport is not None
            conn.transport.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
            try:
                answer = await waiter
            except BaseException:
                conn.close()  # a broken, timed-out or cancelled exchange leaves the connection unusable
                raise
            if conn.reusable and not conn.closed:
                conn.last_used = loop.time()
                self._idle.append(conn)
            else:
                conn.close()
            return answer

    async def _connection(self) -> _Connection:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to have been dropped
            if not conn.closed and now - conn.last_used < self.idle_timeout:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
                                       server_hostname=self.host if self.ssl else None),
                timeout=self.timeout)
        except (OSError, TimeoutError) as error:
            raise ConnectError(f"cannot connect to {self.host_header}: {error}") from error
        self._open += 1
        return protocol

    def _forget(self, conn: _Connection) -> None:
        self._open -= 1
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
        await asyncio.sleep(0)  # let the transports' close callbacks run

