"""classify_exception: real transport failures on 127.0.0.1 become the right reasons."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp.http_exceptions import BadStatusLine

from llmgateway.core.constants import ErrorReason
from llmgateway.providers import classify_exception, describe_exception

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
RawServer = Callable[[Handler], Awaitable[str]]


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    """Starts raw TCP servers on 127.0.0.1 that answer with whatever bytes a test wants."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _fail(url: str, *, read_timeout: float | None = None) -> BaseException:
    """Make one request that must fail, and return the exception it raised."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=read_timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data=b"{}") as response,
        ):
            await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return exc
    raise AssertionError("the request was expected to fail")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_refused_connection_is_a_network_error() -> None:
    """Nothing listening on the port: network_error."""
    exc = await _fail(f"http://127.0.0.1:{_free_port()}/v1/chat/completions")
    assert classify_exception(exc).reason is ErrorReason.NETWORK_ERROR


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def test_connection_closed_without_answer_is_a_network_error(raw_server: RawServer) -> None:
    """The upstream closes the connection before any response: network_error."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    exc = await _fail(await raw_server(handler))
    assert classify_exception(exc).reason is ErrorReason.NETWORK_ERROR


async def test_silent_upstream_is_a_timeout(raw_server: RawServer) -> None:
    """The upstream accepts and never answers: timeout."""
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await done.wait()
        writer.close()

    exc = await _fail(await raw_server(handler), read_timeout=0.05)
    done.set()
    assert classify_exception(exc).reason is ErrorReason.TIMEOUT


async def test_body_cut_short_is_a_stream_disconnect(raw_server: RawServer) -> None:
    """Fewer body bytes than Content-Length, then close: stream_disconnect."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":')
        await writer.drain()
        writer.close()

    exc = await _fail(await raw_server(handler))
    assert classify_exception(exc).reason is ErrorReason.STREAM_DISCONNECT


async def test_protocol_garbage_is_a_server_error(raw_server: RawServer) -> None:
    """An answer that is not HTTP: server_error, never the key's fault."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\nnot http at all\r\n\r\n")
        await writer.drain()
        writer.close()

    exc = await _fail(await raw_server(handler))
    result = classify_exception(exc)
    assert result.reason is ErrorReason.SERVER_ERROR
    assert not result.reason.is_fatal


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ConnectionResetError(104, "Connection reset by peer"), ErrorReason.NETWORK_ERROR),
        (ConnectionRefusedError(111, "refused"), ErrorReason.NETWORK_ERROR),
        (aiohttp.ServerDisconnectedError(), ErrorReason.NETWORK_ERROR),
        (aiohttp.ClientOSError(32, "Broken pipe"), ErrorReason.NETWORK_ERROR),
        (TimeoutError(), ErrorReason.TIMEOUT),
        (aiohttp.ServerTimeoutError("read"), ErrorReason.TIMEOUT),
        (aiohttp.ConnectionTimeoutError("connect"), ErrorReason.TIMEOUT),
        (
            aiohttp.ClientPayloadError("Response payload is not completed"),
            ErrorReason.STREAM_DISCONNECT,
        ),
        (BadStatusLine("garbage"), ErrorReason.SERVER_ERROR),
        (aiohttp.ClientConnectionError("generic"), ErrorReason.SERVER_ERROR),
        (aiohttp.TooManyRedirects(None, ()), ErrorReason.SERVER_ERROR),  # type: ignore[arg-type]
        (OSError(101, "Network is unreachable"), ErrorReason.NETWORK_ERROR),
        (ValueError("something else"), ErrorReason.UNKNOWN),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_exception_table(exc: BaseException, reason: ErrorReason) -> None:
    """Each exception class maps to one reason, subclasses before their bases."""
    result = classify_exception(exc)
    assert result.reason is reason
    assert result.status_code is None
    assert result.message and type(exc).__name__ not in result.message


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (ConnectionRefusedError(111, "refused"), "connection refused"),
        (aiohttp.ServerDisconnectedError(), "the upstream closed the connection"),
        (TimeoutError(), "the upstream did not answer in time"),
        (
            aiohttp.ClientPayloadError("Response payload is not completed"),
            "the upstream response broke off",
        ),
        (BadStatusLine("garbage"), "the upstream sent an invalid HTTP response"),
        (
            aiohttp.ClientResponseError(
                None,  # type: ignore[arg-type]
                (),
                status=400,
                message="Got more than 8190 bytes when reading: b'x-echo: sk-secret'",
            ),
            "the upstream sent an invalid HTTP response",
        ),
        (ValueError("http://user:pass@host/"), "an unexpected error talking to the upstream"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_messages_name_the_class_of_failure_only(exc: BaseException, message: str) -> None:
    """The stored and returned message names what failed, never URLs or upstream bytes."""
    assert classify_exception(exc).message == message
    assert describe_exception(exc).startswith(type(exc).__name__)
