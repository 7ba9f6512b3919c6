"""Relaying an upstream's answer to the client: a success (whole or streamed) or an error as is.

`prepare()` is the point of no return: once the client has the headers, a
failure can only end the stream as an error (the connection is aborted, never
closed cleanly). Every secret is masked on the way: an error answer goes
through the whole masker; a success has the attempt's key masked (its headers
in every form, its body and chunks raw, same length so Content-Length holds).
"""

from __future__ import annotations

import asyncio
import time
from typing import Final, final

import aiohttp
import structlog
from aiohttp import web

from llmgateway.core.constants import ErrorReason
from llmgateway.core.errors import UpstreamUnavailable
from llmgateway.core.logs import mask_key
from llmgateway.core.masking import KeyPattern, Masker
from llmgateway.core.models import KeyRecord
from llmgateway.pool.key_pool import KeyPool
from llmgateway.providers import describe_exception
from llmgateway.providers.transport_errors import failure_class
from llmgateway.providers.upstream import WIRE_ERRORS, UpstreamAnswer
from llmgateway.web.exchange import MAX_RELAYED_ERROR_BODY, Exchange, RequestObserver, Route
from llmgateway.web.forwarding import downstream_headers

log = structlog.get_logger("llmgateway.relay")

BUFFERED_BODY: Final = 256 * 1024
"""A non-SSE success body of known length up to this size is relayed in one write."""

SSE: Final = "text/event-stream"

_MAX_PATTERNS: Final = 4096
"""Prepared key patterns kept at most (up to about 0.5 KiB each); past it the cache starts afresh.

A pattern costs about a microsecond to make, so a pool larger than this (whose
keys come round less often than the cache is cleared) pays that per request
instead of holding half a kilobyte per key."""


def buffered(streaming: bool, content_type: str, length: int | None) -> bool:
    """True when a success is read whole and sent in one write rather than streamed.

    With streaming off, always; else a small body of known length that is not
    server-sent events: nothing is gained by streaming it, and a body cut
    short can still become a clean 502.
    """
    return not streaming or (content_type != SSE and length is not None and length <= BUFFERED_BODY)


def abort(request: web.Request) -> None:
    """End a prepared response as an error: drop the connection before the final chunk."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def log_wire_failure(route: Route, exc: BaseException) -> None:
    """The full detail of a transport failure, for the log only (masked there)."""
    log.warning(
        "upstream_wire_failure",
        instance=route.config.name,
        reason=failure_class(exc),
        detail=describe_exception(exc),
    )


@final
class Relay:
    """Sends upstream answers to clients, masking secrets and reporting in-band errors."""

    def __init__(self, pool: KeyPool, masker: Masker, observer: RequestObserver | None) -> None:
        self._pool = pool
        self._masker = masker
        self._observer = observer
        self._patterns: dict[str, KeyPattern] = {}
        """Each key's prepared forms, made on its first request and kept (bounded)."""

    async def success(
        self,
        request: web.Request,
        route: Route,
        record: KeyRecord,
        upstream: aiohttp.ClientResponse,
        exchange: Exchange,
    ) -> web.StreamResponse:
        """Send the upstream's success to the client; past `prepare()` no retry is possible.

        Waiting for the body counts as upstream time, so the overhead
        histogram holds only the gateway's own work.
        """
        self._pool.served(record, upstream.status)
        pattern = self._pattern(record.key)
        headers = downstream_headers(
            upstream.headers, exchange.request_id, self._masker.mask_text, screen=pattern.appears_in
        )
        if buffered(route.streaming, upstream.content_type, upstream.content_length):
            data = await self._read_whole(route, upstream, exchange)
            return web.Response(status=upstream.status, headers=headers, body=pattern.whole(data))
        response = web.StreamResponse(status=upstream.status, headers=headers)
        if upstream.content_type != SSE and upstream.content_length is not None:
            response.content_length = upstream.content_length
        await self._stream(request, route, record, upstream, exchange, response, pattern)
        return response

    async def _read_whole(
        self, route: Route, upstream: aiohttp.ClientResponse, exchange: Exchange
    ) -> bytes:
        """The whole success body, read within `timeouts.idle`; a failure to read it is a 502."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(route.config.timeouts.idle):
                data = await upstream.read()
            exchange.upstream_seconds += time.perf_counter() - started
        except WIRE_ERRORS as exc:
            log_wire_failure(route, exc)
            raise UpstreamUnavailable(
                f"the upstream's answer could not be read: {failure_class(exc)}"
            ) from exc
        finally:
            upstream.release()
        return data

    async def _stream(
        self,
        request: web.Request,
        route: Route,
        record: KeyRecord,
        upstream: aiohttp.ClientResponse,
        exchange: Exchange,
        response: web.StreamResponse,
        pattern: KeyPattern,
    ) -> None:
        """Relay chunk by chunk, each within `timeouts.idle`; a failure ends it as an error."""
        started = time.perf_counter()
        clean = False
        try:
            await response.prepare(request)
            exchange.prepared = response
            clean = await self._chunks(route, record, upstream, exchange, response, pattern)
        except WIRE_ERRORS as exc:
            self._broke_off(request, record, exchange, exc)
        finally:
            exchange.upstream_seconds += time.perf_counter() - started
            if clean:
                upstream.release()
            else:
                upstream.close()
        if clean:
            await response.write_eof()
        else:
            abort(request)

    async def _chunks(
        self,
        route: Route,
        record: KeyRecord,
        upstream: aiohttp.ClientResponse,
        exchange: Exchange,
        response: web.StreamResponse,
        pattern: KeyPattern,
    ) -> bool:
        """Copy every chunk to the client; True at a clean end, False after an error event."""
        content, idle = upstream.content, route.config.timeouts.idle
        sse = upstream.content_type == SSE
        raw, chars, held = pattern.raw, pattern.chars, b""
        while True:
            async with asyncio.timeout(idle):
                chunk = await content.readany()
            if not chunk:
                if held:  # it was not the key after all
                    await response.write(held)
                return True
            out = chunk
            # The key, or a chunk ending in what may be its beginning: rare, so the common
            # case costs two look-ups here and no call (bytes.find, not `in`, which first
            # tries its operand as an int and pays for the error).
            if held or chunk.find(raw) != -1 or chunk[-1] in chars:
                out, held = pattern.split(held + chunk)
            error = sse and chunk.find(b"error") != -1
            if error:
                out = self._masker.mask_bytes(out)
            if out:
                await response.write(out)
            if error and self._inband_error(route, record, chunk):
                # The client has the error event; the response still ends as an error,
                # not as a clean end of stream.
                exchange.status = 502
                return False

    def _broke_off(
        self, request: web.Request, record: KeyRecord, exchange: Exchange, exc: BaseException
    ) -> None:
        if isinstance(exc, ConnectionResetError) and request.transport is None:
            log.info("client_left_mid_stream", instance=exchange.instance)
        else:
            log.warning(
                "upstream_stream_broke_off",
                instance=exchange.instance,
                key=mask_key(record.key),
                reason=ErrorReason.STREAM_DISCONNECT.value,
                detail=describe_exception(exc),
            )
            if self._observer is not None:
                self._observer.attempt_failed(exchange.instance, ErrorReason.STREAM_DISCONNECT)
        exchange.status = 499 if request.transport is None else 502

    def _inband_error(self, route: Route, record: KeyRecord, chunk: bytes) -> bool:
        """Classify and record an error event inside a 200 stream; True if there was one."""
        result = route.adapter.classify_stream_event(chunk)
        if result is None or result.reason is None:
            return False
        if self._observer is not None:
            self._observer.attempt_failed(route.config.name, result.reason)
        log.warning(
            "stream_error_event",
            instance=route.config.name,
            key=mask_key(record.key),
            reason=result.reason.value,
        )
        self._pool.report(record, result)
        return True

    def as_is(self, answer: UpstreamAnswer, exchange: Exchange, key: str) -> web.Response:
        """The upstream's error answer, unchanged but for every secret in it.

        Some providers quote the key back in their error (Gemini: "Consumer
        'api_key:AIza…' has been suspended"), raw, escaped or encoded; body and
        headers go through the whole masker. An answer too large to relay
        whole is never cut and passed on as if complete: it becomes a 502.
        """
        if not answer.complete:
            raise UpstreamUnavailable(
                f"the upstream's error answer (HTTP {answer.status}) was too large to relay "
                f"(over {MAX_RELAYED_ERROR_BODY // (1024 * 1024)} MiB)"
            )
        masker = self._masker
        masker.remember(key)
        headers = downstream_headers(answer.headers, exchange.request_id, masker.mask_text)
        return web.Response(
            status=answer.status, headers=headers, body=masker.mask_bytes(answer.body)
        )

    def _pattern(self, key: str) -> KeyPattern:
        """The prepared forms of `key` (made once per key, kept while the pool is that size)."""
        pattern = self._patterns.get(key)
        if pattern is None:
            if len(self._patterns) >= _MAX_PATTERNS:
                self._patterns.clear()
            pattern = self._patterns[key] = KeyPattern(key)
        return pattern
