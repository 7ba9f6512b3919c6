"""One call to an upstream: send once, classify the status, read a bounded body, classify the body.

The gateway (each attempt of a client request) and the keeper (each probe)
call upstreams through `call_upstream`; they differ only in their
`CallLimits`, made once per instance (`CallLimits.for_relay`) or per probe
(`CallLimits.for_probe`). Redirects are never followed. Wire failures
(refused, reset, garbage, timeout) raise: each caller classifies and logs
them its own way (`classify_exception`).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDictProxy
from yarl import URL

from llmgateway.config.schemas import Timeouts
from llmgateway.core.models import CheckResult
from llmgateway.providers.base import MAX_ERROR_BODY, ProviderAdapter

WIRE_ERRORS: Final = (aiohttp.ClientError, TimeoutError, OSError)
"""What talking to an upstream may raise (refused, reset, garbage, timeout)."""

_DRAIN_ERRORS: Final = (*WIRE_ERRORS, ValueError)
"""What reading a body no verdict depends on may raise, and is ignored."""


async def read_bounded(
    stream: aiohttp.StreamReader, limit: int, idle: float | None = None
) -> bytes:
    """Read `stream` until its end or `limit` bytes, whichever comes first.

    `read(n)` alone returns only what has arrived so far, hence the loop.
    With `idle`, each read may wait at most that many seconds (TimeoutError).
    """
    parts: list[bytes] = []
    size = 0
    while size < limit:
        async with asyncio.timeout(idle):
            chunk = await stream.read(limit - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class CallLimits:
    """How long one call may take, how much of a failure's body is read, and who gets it."""

    client_timeout: aiohttp.ClientTimeout
    """aiohttp's own bounds: the connection, and (a probe) each socket read."""
    headers_within: float
    """Seconds from sending until the answer's headers are in, at most (the hard cap)."""
    body_limit: int
    """Bytes of a failure's body kept at most."""
    read_idle: float | None
    """Seconds each read of the body may wait (None: no bound per read)."""
    body_within: float | None
    """Seconds reading the whole body may take (None: no bound on the whole)."""
    relay: bool
    """True when the answer goes to a client: a success is handed back unread and a
    failure's body is read whole (a failure reading it fails the call). False for a
    probe: only the verdict counts, so a body the status line already decided is
    only drained for the connection's sake, and a failure doing so changes nothing."""

    @classmethod
    def for_relay(cls, timeouts: Timeouts, body_limit: int) -> CallLimits:
        """A gateway attempt: headers within `first_byte`, each body read within `idle`.

        The connection must open within `timeouts.connect`; the headers arrive
        within `timeouts.first_byte` of sending, the connection included. A
        success's body is the relay's to read.
        """
        return cls(
            client_timeout=aiohttp.ClientTimeout(
                total=None, connect=timeouts.connect, sock_connect=timeouts.connect
            ),
            headers_within=timeouts.first_byte,
            body_limit=body_limit,
            read_idle=timeouts.idle,
            body_within=None,
            relay=True,
        )

    @classmethod
    def for_probe(cls, timeouts: Timeouts) -> CallLimits:
        """A keeper probe: headers `first_byte` after sending, the body within `idle` in all.

        The connection must open within `timeouts.connect` and the headers
        arrive `timeouts.first_byte` after the request went out (aiohttp bounds
        each socket read); the asyncio deadline caps the whole wait for headers
        at their sum. At most MAX_ERROR_BODY bytes of the body are read.
        """
        return cls(
            client_timeout=aiohttp.ClientTimeout(
                total=None,
                connect=timeouts.connect,
                sock_connect=timeouts.connect,
                sock_read=timeouts.first_byte,
            ),
            headers_within=timeouts.connect + timeouts.first_byte,
            body_limit=MAX_ERROR_BODY,
            read_idle=None,
            body_within=timeouts.idle,
            relay=False,
        )


@dataclass(slots=True)
class UpstreamAnswer:
    """What one upstream call answered: its verdict, and the success unread or the failure's body."""

    result: CheckResult
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes = b""
    """The start of a failure's body (at most `body_limit` bytes); empty otherwise."""
    complete: bool = True
    """False when the failure's body was longer than `body_limit` (`body` is only its start)."""
    response: aiohttp.ClientResponse | None = None
    """A relayed success, its body unread: the caller reads it and releases the response."""


async def call_upstream(
    session: aiohttp.ClientSession,
    adapter: ProviderAdapter,
    method: str,
    url: str | URL,
    headers: LooseHeaders,
    data: bytes | None,
    limits: CallLimits,
) -> UpstreamAnswer:
    """Send once within `limits` and classify the answer, by its status line or its body.

    Every response not handed back is released: its connection is reused when
    its body was read to the end, closed otherwise.
    """
    async with asyncio.timeout(limits.headers_within):
        response = await session.request(
            method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            timeout=limits.client_timeout,
        )
    handed_back = False
    try:
        status, answer_headers = response.status, response.headers
        result = adapter.classify_status(status, answer_headers)
        if result is not None and not limits.relay:
            with suppress(*_DRAIN_ERRORS):
                await _read_body(response, limits)
            return UpstreamAnswer(result, status, answer_headers)
        if result is not None and result.ok:
            handed_back = True
            return UpstreamAnswer(result, status, answer_headers, response=response)
        body, complete = await _read_body(response, limits)
        if result is None:
            result = adapter.classify_body(status, answer_headers, body[:MAX_ERROR_BODY])
        return UpstreamAnswer(result, status, answer_headers, body, complete)
    finally:
        if not handed_back:
            response.release()


async def _read_body(response: aiohttp.ClientResponse, limits: CallLimits) -> tuple[bytes, bool]:
    """At most `limits.body_limit` bytes of the body, and whether that was all of it."""
    async with asyncio.timeout(limits.body_within):
        data = await read_bounded(response.content, limits.body_limit + 1, limits.read_idle)
    if len(data) <= limits.body_limit:
        return data, True
    return data[: limits.body_limit], False
