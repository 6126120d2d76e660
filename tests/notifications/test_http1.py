"""notifications.http1, the push sender's keep-alive HTTP/1.1 client, against small servers on loopback sockets.

Each server is an asyncio server in the tests' (session) loop that answers with bytes the test chooses, so that what
FCM's front end may do and the stand-in never does (chunked bodies, `Connection: close`, silence, a dropped
connection, TLS) is exercised too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Awaitable, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notifications import http1

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"name\":1}\n"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self, answer: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def answering(*answers: bytes, then_close: bool = False) -> Callable[[Server], Handler]:
    """Every request on a connection gets the next of `answers` (the last repeats); optionally close after each."""
    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            n = 0
            while True:
                await server.read_request(reader)
                writer.write(answers[min(n, len(answers) - 1)])
                await writer.drain()
                n += 1
                if then_close:
                    return
        return handle
    return make


async def serve(make: Callable[[Server], Handler], ssl_context: ssl.SSLContext | None = None) -> Server:
    server = Server(lambda r, w: asyncio.sleep(0), ssl_context)
    server.answer = make(server)
    return server


def pool_for(server: Server, scheme: str = "http", **options) -> http1.Http1Pool:
    options = {"limit": 4, "timeout": 5.0} | options
    return http1.Http1Pool(f"{scheme}://localhost:{server.port}/v1/projects/p/messages:send", **options)


async def post(pool: http1.Http1Pool, body: bytes = b'{"message":{}}') -> http1.Answer:
    head = pool.request_head("POST", "/v1/projects/p/messages:send", {"Authorization": "Bearer t"})
    return await pool.request(head, body)


async def test_a_request_is_one_write_and_connections_are_kept_alive() -> None:
    async with await serve(answering(OK)) as server:
        pool = pool_for(server)
        answers = [await post(pool, b'{"n":%d}' % i) for i in range(3)]
        await pool.close()
    assert answers == [(200, [], b'{"name":1}\n')] * 3
    assert server.connections == 1  # one after the other: the same connection each time
    assert server.requests[0] == (b"POST /v1/projects/p/messages:send HTTP/1.1\r\nHost: localhost:%d\r\n"
                                  b"Authorization: Bearer t\r\nContent-Length: 7\r\n\r\n{\"n\":0}" % server.port)


async def test_chunked_answers_and_error_headers() -> None:
    chunked = (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"7\r\n{\"error\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n")
    async with await serve(answering(chunked, OK)) as server:
        pool = pool_for(server)
        first, second = await post(pool), await post(pool)
        await pool.close()
    assert first == (429, [("Retry-After", "60"), ("Transfer-Encoding", "chunked")], b'{"error":1}')
    assert second == (200, [], b'{"name":1}\n')  # headers only for what is not 2xx
    assert server.connections == 1


async def test_connection_close_is_honoured() -> None:
    closing = OK.replace(b"Content-Type", b"Connection: close\r\nContent-Type")
    async with await serve(answering(closing, then_close=True)) as server:
        pool = pool_for(server)
        answers = [await post(pool) for _ in range(3)]
        await pool.close()
    assert [a[0] for a in answers] == [200, 200, 200]
    assert server.connections == 3


async def test_an_idle_connection_is_not_reused_after_the_idle_timeout() -> None:
    async with await serve(answering(OK)) as server:
        pool = pool_for(server, idle_timeout=0.1)
        await post(pool)
        await asyncio.sleep(0.3)
        await post(pool)
        await pool.close()
    assert server.connections == 2


async def test_at_most_limit_requests_in_flight() -> None:
    in_flight, most = 0, 0

    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal in_flight, most
            while True:
                await server.read_request(reader)
                in_flight += 1
                most = max(most, in_flight)
                await asyncio.sleep(0.02)
                in_flight -= 1
                writer.write(OK)
                await writer.drain()
        return handle

    async with await serve(make) as server:
        pool = pool_for(server, limit=3)
        answers = await asyncio.gather(*(post(pool) for _ in range(12)))
        await pool.close()
    assert [a[0] for a in answers] == [200] * 12
    assert most == 3 and server.connections == 3


async def test_silence_is_a_timeout_and_the_connection_is_dropped() -> None:
    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            await reader.read()  # never answers; returns when the client gives up and closes
        return handle

    async with await serve(make) as server:
        pool = pool_for(server, timeout=0.3)
        with pytest.raises(TimeoutError):
            await post(pool)
        await pool.close()
        assert not pool._idle


async def test_a_connection_dropped_before_the_answer_is_a_transport_error() -> None:
    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)  # then closes without a word
        return handle

    async with await serve(make) as server:
        pool = pool_for(server)
        with pytest.raises(http1.TransportError) as raised:
            await post(pool)
        await pool.close()
    assert not isinstance(raised.value, http1.ConnectError)


async def test_garbage_is_a_transport_error() -> None:
    async with await serve(answering(b"SMTP ready\r\n\r\n")) as server:
        pool = pool_for(server)
        with pytest.raises(http1.TransportError):
            await post(pool)
        await pool.close()


async def test_nothing_listening_is_a_connect_error() -> None:
    async with await serve(answering(OK)) as server:
        port = server.port
    pool = http1.Http1Pool(f"http://127.0.0.1:{port}/x", limit=1, timeout=2.0)
    with pytest.raises(http1.ConnectError):
        await post(pool)


def _tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for localhost, and a client context trusting it."""
    import tempfile

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as cert_file, \
            tempfile.NamedTemporaryFile("wb", suffix=".pem") as key_file:
        cert_file.write(pem)
        key_file.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        cert_file.flush()
        key_file.flush()
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cert_file.name, key_file.name)
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client


async def test_https_checks_the_certificate() -> None:
    server_context, client_context = _tls_pair()
    async with await serve(answering(OK), ssl_context=server_context) as server:
        pool = pool_for(server, "https", ssl_context=client_context)
        answers = [await post(pool) for _ in range(2)]
        await pool.close()
        untrusted = pool_for(server, "https")  # the system's CAs: the self-signed certificate is refused
        with pytest.raises(http1.ConnectError):
            await post(untrusted)
    assert [a[0] for a in answers] == [200, 200]
    assert server.connections == 1  # kept alive; a refused handshake never reaches the handler
