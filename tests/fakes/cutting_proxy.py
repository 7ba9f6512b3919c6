"""A TCP proxy on 127.0.0.1 that can cut a connection after N response bytes.

The idea of asyncpg's `TCPFuzzingProxy`: put it between the gateway and the
fake upstream to produce a `stream_disconnect` at an exact byte offset, below
HTTP. `refused_port()` gives an address where nothing listens (`network_error`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType
from typing import Final, Self, final

_READ_SIZE: Final = 64 * 1024


def refused_port() -> int:
    """A port on 127.0.0.1 with nothing listening: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@final
class CuttingProxy:
    """Forwards TCP both ways to a target; aborts each connection after `cut_after_bytes`.

    `cut_after_bytes` counts the target's bytes (the response side) per
    connection; None forwards everything. It may be changed between
    connections. `cuts` counts connections cut so far.
    """

    def __init__(self, target_host: str, target_port: int, cut_after_bytes: int | None) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.cut_after_bytes = cut_after_bytes
        self.cuts = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        if self._server is None:
            raise RuntimeError("CuttingProxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The proxy's origin, e.g. "http://127.0.0.1:40124"."""
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        self.connections += 1
        try:
            try:
                target_r, target_w = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                client_w.transport.abort()
                return
            self._writers.add(target_w)
            limit = self.cut_after_bytes
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._pipe(client_r, target_w, None))
                    group.create_task(self._pipe(target_r, client_w, limit))
            except* (ConnectionError, _Cut):
                pass
            finally:
                for writer in (client_w, target_w):
                    writer.transport.abort()
                    self._writers.discard(writer)
        finally:
            self._writers.discard(client_w)
            self._tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int | None
    ) -> None:
        """Copy until EOF; with a limit, copy `limit` bytes then raise `_Cut`."""
        sent = 0
        while data := await reader.read(_READ_SIZE):
            if limit is not None and sent + len(data) >= limit:
                writer.write(data[: limit - sent])
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                self.cuts += 1
                raise _Cut
            sent += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


class _Cut(Exception):
    """The response side reached `cut_after_bytes`: tear the connection down."""
