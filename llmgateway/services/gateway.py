"""The gateway's request path: authenticate, pick a key, proxy, classify, retry, relay.

`Gateway.handle` reads top to bottom: nothing reaches the client before
`_relay` calls `prepare()`; until then a key failure only steers the retry
loop (issue 6). Nothing here touches the database or compiles anything: the
per-instance `Route` tables are built once at start-up.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, final

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from structlog.contextvars import bind_contextvars, reset_contextvars
from yarl import URL

from llmgateway.config.schemas import ProviderConfig, RetryBudget
from llmgateway.core.accessor import ConfigAccessor
from llmgateway.core.constants import ErrorReason, ProviderType, StreamingMode
from llmgateway.core.errors import (
    BodyTooLarge,
    ClientRequestError,
    GatewayAuthError,
    GatewayError,
    GatewayFailure,
    KeysCoolingDown,
    MethodNotAllowed,
    NoToken,
    NoUsableKey,
    TooManyAuthFailures,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llmgateway.core.logs import mask_key
from llmgateway.core.masking import KeyPattern, Masker
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.providers import (
    build_adapter,
    classify_exception,
    describe_exception,
    family_for_path,
)
from llmgateway.providers.base import MAX_ERROR_BODY, ProviderAdapter, read_bounded
from llmgateway.providers.transport_errors import failure_class
from llmgateway.services.auth_failures import AuthFailures
from llmgateway.services.forwarding import (
    KEY_PARAM,
    X_REQUEST_ID,
    client_token,
    downstream_headers,
    safe_path,
    strip_key_param,
    upstream_headers,
)
from llmgateway.services.incidents import BACKOFF_START, Incident
from llmgateway.services.pool import AllKeysTried, KeyPool

log = structlog.get_logger("llmgateway.gateway")

MAX_RELAYED_ERROR_BODY: Final = 1024 * 1024
"""An upstream error body is returned as is up to this size; a larger one becomes a 502."""

PROXIED_METHODS: Final = frozenset(("GET", "POST", "PUT", "PATCH", "DELETE"))
"""The only methods sent upstream; any other (TRACE, CONNECT, ...) gets 405."""

_ALLOW: Final = ", ".join(sorted(PROXIED_METHODS))

BUFFERED_BODY: Final = 256 * 1024
"""A non-SSE success body of known length up to this size is relayed in one write."""

_SSE: Final = "text/event-stream"
_MAX_PATTERNS: Final = 100_000
"""Prepared key patterns kept at most (0.5 to 1 KiB each); past it the cache starts afresh."""
_UPSTREAM_ERRORS: Final = (aiohttp.ClientError, TimeoutError, OSError)


class BadPath(ClientRequestError):
    """The client path would climb out of `api_base_url`."""

    status = 400


class RequestTimeout(ClientRequestError):
    """The client did not send its body within `timeouts.total`."""

    status = 408


class RequestObserver(Protocol):
    """Receives what the request path measures (implemented by the metrics)."""

    def request_done(
        self, instance: str, status: int, seconds: float, upstream_seconds: float
    ) -> None:
        """One client request ended with `status`; total and upstream wall time."""

    def attempt_failed(self, instance: str, reason: ErrorReason) -> None:
        """One upstream attempt failed with `reason` (a retry may follow)."""


@dataclass(frozen=True, slots=True)
class Route:
    """Everything the request path needs of one instance, built at start-up."""

    config: ProviderConfig
    adapter: ProviderAdapter
    base_url: str
    streaming: bool
    configured_models: frozenset[str]
    key_retry: RetryBudget
    server_retry: RetryBudget
    retry_enabled: bool
    client_timeout: aiohttp.ClientTimeout


@dataclass(slots=True)
class _Exchange:
    """The mutable state of one client request, for logs and metrics."""

    request_id: str
    started: float
    instance: str = "-"
    model: str = ""
    attempts: int = 0
    keys: list[str] = field(default_factory=list)
    upstream_seconds: float = 0.0
    status: int = 0
    body_read: bool = False
    """The client's body has arrived whole (a timeout before that is the client's: 408)."""
    prepared: web.StreamResponse | None = None
    """The client's response once its headers went out (the point of no return)."""


@dataclass(frozen=True, slots=True)
class _UpstreamAnswer:
    """A non-success upstream response kept to be returned as is."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    complete: bool = True
    """False when the body was larger than MAX_RELAYED_ERROR_BODY (and `body` only its start)."""


def _build_route(config: ProviderConfig, adapter: ProviderAdapter) -> Route:
    policy = config.gateway_policy
    return Route(
        config=config,
        adapter=adapter,
        base_url=config.api_base_url.rstrip("/"),
        streaming=policy.streaming_mode is StreamingMode.AUTO,
        configured_models=frozenset(config.models),
        key_retry=policy.retry.on_key_error,
        server_retry=policy.retry.on_server_error,
        retry_enabled=policy.retry.enabled,
        client_timeout=aiohttp.ClientTimeout(
            total=None, connect=config.timeouts.connect, sock_connect=config.timeouts.connect
        ),
    )


def _shape_adapter(provider_type: ProviderType) -> ProviderAdapter:
    """An adapter used only for error shapes when no instance is known."""
    return build_adapter(
        ProviderConfig(
            name="_", provider_type=provider_type, api_base_url="http://invalid", default_model=""
        )
    )


@final
class Gateway:
    """The catch-all proxy handler over the live key pool."""

    def __init__(
        self,
        accessor: ConfigAccessor,
        pool: KeyPool,
        session: aiohttp.ClientSession,
        adapters: Mapping[str, ProviderAdapter],
        observer: RequestObserver | None = None,
        *,
        masker: Masker | None = None,
        auth_failures: AuthFailures | None = None,
    ) -> None:
        self._pool = pool
        self._session = session
        self._observer = observer
        self._masker = masker if masker is not None else Masker(accessor.secrets())
        self._patterns: dict[str, KeyPattern] = {}
        """Each key's prepared forms, made on its first request and kept (bounded)."""
        self._auth_failures = auth_failures
        self._access_log = accessor.logging.access_log
        self._max_body = int(accessor.server.max_body_mb * 1024 * 1024)
        self._routes: dict[str, Route] = {}
        for provider in accessor.enabled_providers():
            token = provider.access_control.gateway_access_token
            if token:
                self._routes[token] = _build_route(provider, adapters[provider.name])
        self._shapes = {t: _shape_adapter(t) for t in ProviderType}
        # Request ids: a random per-process prefix and a counter (unique, and far cheaper
        # than a uuid4 per request).
        self._id_prefix = f"{secrets.token_hex(8)}-"
        self._ids = itertools.count(1)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Proxy one client request; every exit answers in the provider's error shape."""
        exchange = _Exchange(
            request_id=request.headers.get(X_REQUEST_ID) or f"{self._id_prefix}{next(self._ids):x}",
            started=time.perf_counter(),
        )
        # Every log line of this request carries its id (merged from the context).
        bound = bind_contextvars(request_id=exchange.request_id)
        try:
            return await self._handle(request, exchange)
        finally:
            reset_contextvars(**bound)

    async def _handle(self, request: web.Request, exchange: _Exchange) -> web.StreamResponse:
        route: Route | None = None
        response: web.StreamResponse
        try:
            route = self._authenticate(request)
            exchange.instance = route.config.name
            if request.method not in PROXIED_METHODS:
                raise MethodNotAllowed(f"the gateway proxies only {_ALLOW} requests")
            async with asyncio.timeout(route.config.timeouts.total):
                response = await self._proxy(request, route, exchange)
        except GatewayError as exc:
            response = self._fail(request, route, exc, exchange)
        except TimeoutError:
            timeout: GatewayError = (
                UpstreamTimeout("the request exceeded timeouts.total")
                if exchange.body_read
                else RequestTimeout("the request body did not arrive within timeouts.total")
            )
            response = self._fail(request, route, timeout, exchange)
        except asyncio.CancelledError:
            exchange.status = 499  # the client went away; nobody's fault
            self._finish(exchange)
            raise
        except Exception:  # the request's outermost guard: a provider-shaped 500, never plain text
            log.exception("request failed inside the gateway", instance=exchange.instance)
            failure = GatewayFailure("the gateway failed to handle this request")
            response = self._fail(request, route, failure, exchange)
        if not exchange.status:
            exchange.status = response.status
        self._finish(exchange)
        return response

    def _authenticate(self, request: web.Request) -> Route:
        try:
            token = client_token(request.headers, request.query.get(KEY_PARAM))
            route = self._routes.get(token)
            if route is None:
                raise GatewayAuthError("the gateway token is not valid for any provider instance")
        except NoToken:
            raise
        except GatewayAuthError as exc:
            # A wrong token: counted for the client's address; too many, and it waits a minute.
            wait = (
                self._auth_failures.failed(request.remote, "proxy") if self._auth_failures else None
            )
            if wait is None:
                raise
            raise TooManyAuthFailures(
                "too many failed token attempts from this address; retry later", wait
            ) from exc
        return route

    async def _proxy(
        self, request: web.Request, route: Route, exchange: _Exchange
    ) -> web.StreamResponse:
        body = await self._read_body(request)
        exchange.body_read = True
        url, headers, model = _prepare(request, route, body)
        exchange.model = model
        instance = route.config.name
        slot_model = self._pool.slot_model(instance, model)
        rotation = _Rotation(route)
        while True:
            record = await self._pick(instance, slot_model, rotation)
            route.adapter.apply_key(headers, record.key)
            exchange.attempts += 1
            exchange.keys.append(record.key)
            sent = time.perf_counter()
            result, answer, upstream = await self._attempt(
                request.method, url, headers, body, route
            )
            exchange.upstream_seconds += time.perf_counter() - sent
            if upstream is not None:
                return await self._relay(request, route, record, upstream, exchange)
            if self._observer is not None and result.reason is not None:
                self._observer.attempt_failed(instance, result.reason)
            if not self._retry_after_failure(route, model, record, result, answer, rotation):
                return self._give_up(record, result, answer, rotation, exchange)

    async def _pick(self, instance: str, slot_model: str, rotation: _Rotation) -> KeyRecord:
        """The next key: one not tried yet, else (after the owed backoff) a tried one again."""
        try:
            return self._pool.pick(instance, slot_model, rotation.excluded())
        except AllKeysTried:
            pass
        if rotation.owed is not None:
            await rotation.owed.wait()
            rotation.owed = None
        rotation.tried.clear()
        try:
            return self._pool.pick(instance, slot_model, rotation.spent)
        except AllKeysTried:
            raise rotation.exhausted(instance, slot_model) from None

    def _retry_after_failure(
        self,
        route: Route,
        model: str,
        record: KeyRecord,
        result: CheckResult,
        answer: _UpstreamAnswer | None,
        rotation: _Rotation,
    ) -> bool:
        """Tell the pool what the failed attempt means; True to try another attempt.

        A fatal reason (for a model the request really names) leaves the pool
        and is replaced at once, outside the retry budget: the pool's size and
        `timeouts.total` bound that. A rate limit takes a key retry; a
        server-side failure a server retry, on another key first. Within an
        incident nothing is condemned and every attempt costs a key retry.
        """
        reason = result.reason
        assert reason is not None
        log.debug(
            "upstream_attempt_failed",
            instance=route.config.name,
            key=mask_key(record.key),
            reason=reason.value,
            status_code=result.status_code,
        )
        if reason is ErrorReason.NO_MODEL and not _names_model(route, model, answer):
            return False  # the client's path or model, not the key's: relayed as is
        if reason.is_fatal or reason is ErrorReason.RATE_LIMITED:
            incident = self._pool.report(record, result)
            rotation.spent.append(record.key_id)
            if incident is not None:
                rotation.incident = incident
                return rotation.key_budget.take()
            if reason.is_fatal:
                return route.retry_enabled
            return rotation.key_budget.take()
        if reason.is_server_error:
            self._pool.report(record, result)
            if not rotation.server_budget.take():
                return False
            rotation.tried.append(record.key_id)
            rotation.owed = rotation.server_budget
            return True
        return False

    def _give_up(
        self,
        record: KeyRecord,
        result: CheckResult,
        answer: _UpstreamAnswer | None,
        rotation: _Rotation,
        exchange: _Exchange,
    ) -> web.Response:
        """The client's answer once no attempt is left: the upstream's own, or ours."""
        if rotation.incident is not None:
            raise rotation.exhausted(exchange.instance, exchange.model)
        if answer is not None:
            return self._as_is(answer, exchange, record.key)
        if result.reason is ErrorReason.TIMEOUT:
            raise UpstreamTimeout("the upstream did not answer in time")
        raise UpstreamUnavailable(f"the upstream failed: {result.message}")

    async def _attempt(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: bytes,
        route: Route,
    ) -> tuple[CheckResult, _UpstreamAnswer | None, aiohttp.ClientResponse | None]:
        """Send once; a success is returned unread, a failure classified and released."""
        adapter = route.adapter
        result: CheckResult | None = None
        try:
            async with asyncio.timeout(route.config.timeouts.first_byte):
                upstream = await self._session.request(
                    method,
                    url,
                    headers=headers,
                    data=body or None,
                    allow_redirects=False,
                    timeout=route.client_timeout,
                )
        except _UPSTREAM_ERRORS as exc:
            _log_wire_failure(route, exc)
            return classify_exception(exc), None, None
        try:
            result = adapter.classify_status(upstream.status, upstream.headers)
            if result is not None and result.ok:
                return result, None, upstream
            data = await read_bounded(
                upstream.content, MAX_RELAYED_ERROR_BODY + 1, route.config.timeouts.idle
            )
            if result is None:
                result = adapter.classify_body(
                    upstream.status, upstream.headers, data[:MAX_ERROR_BODY]
                )
            complete = len(data) <= MAX_RELAYED_ERROR_BODY
            answer = _UpstreamAnswer(
                upstream.status, upstream.headers, data[:MAX_RELAYED_ERROR_BODY], complete
            )
            return result, answer, None
        except _UPSTREAM_ERRORS as exc:
            _log_wire_failure(route, exc)
            return classify_exception(exc), None, None
        finally:
            if result is None or not result.ok:
                upstream.close()

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole client body, refused with 413 as soon as it passes the limit."""
        length = request.content_length
        if length is not None and length > self._max_body:
            raise BodyTooLarge(f"the request body is larger than {self._max_body} bytes")
        if not request.body_exists:
            return b""
        try:
            if length is not None:
                return await request.content.readexactly(length)
            chunks: list[bytes] = []
            size = 0
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > self._max_body:
                    raise BodyTooLarge(f"the request body is larger than {self._max_body} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        except asyncio.IncompleteReadError:
            raise ClientRequestError("the request body ended early") from None

    async def _relay(
        self,
        request: web.Request,
        route: Route,
        record: KeyRecord,
        upstream: aiohttp.ClientResponse,
        exchange: _Exchange,
    ) -> web.StreamResponse:
        """Send the upstream's success to the client; past `prepare()` no retry is possible.

        The headers are searched for this attempt's key in every form (it is
        the secret this upstream was sent), and go through the whole masker
        when it is there; the body and every chunk have the key masked (raw
        form, same length, so Content-Length holds); a stream chunk carrying
        an error event goes through the whole masker.
        """
        self._pool.served(record, upstream.status)
        masker = self._masker
        pattern = self._pattern(record.key)
        headers = downstream_headers(
            upstream.headers, exchange.request_id, masker.mask_text, screen=pattern.appears_in
        )
        idle = route.config.timeouts.idle
        sse = upstream.content_type == _SSE
        length = upstream.content_length
        # A small body of known length is read whole and sent in one write: nothing is
        # gained by streaming it, and a body cut short can still become a clean 502.
        # Waiting for the body counts as upstream time, so the overhead histogram holds
        # only the gateway's own work.
        started = time.perf_counter()
        if not route.streaming or (not sse and length is not None and length <= BUFFERED_BODY):
            try:
                async with asyncio.timeout(idle):
                    data = await upstream.read()
                exchange.upstream_seconds += time.perf_counter() - started
            except _UPSTREAM_ERRORS as exc:
                _log_wire_failure(route, exc)
                raise UpstreamUnavailable(
                    f"the upstream's answer could not be read: {failure_class(exc)}"
                ) from exc
            finally:
                upstream.release()
            return web.Response(status=upstream.status, headers=headers, body=pattern.whole(data))
        response = web.StreamResponse(status=upstream.status, headers=headers)
        if not sse and length is not None:
            response.content_length = length
        content = upstream.content
        clean = False
        raw, chars, held = pattern.raw, pattern.chars, b""
        try:
            await response.prepare(request)
            exchange.prepared = response
            while True:
                async with asyncio.timeout(idle):
                    chunk = await content.readany()
                if not chunk:
                    clean = True
                    if held:  # it was not the key after all
                        await response.write(held)
                    break
                out = chunk
                # The key, or a chunk ending in what may be its beginning: rare, so the
                # common case costs two look-ups here and no call (bytes.find, not `in`,
                # which first tries its operand as an int and pays for the error).
                if held or chunk.find(raw) != -1 or chunk[-1] in chars:
                    out, held = pattern.split(held + chunk)
                error = sse and chunk.find(b"error") != -1
                if error:
                    out = masker.mask_bytes(out)
                if out:
                    await response.write(out)
                if error and self._inband_error(route, record, chunk):
                    # The client has the error event; the response still ends as an
                    # error, not as a clean end of stream (issue 6).
                    exchange.status = 502
                    break
        except _UPSTREAM_ERRORS as exc:
            if isinstance(exc, ConnectionResetError) and request.transport is None:
                log.info("client went away mid-stream", instance=exchange.instance)
            else:
                log.warning(
                    "upstream stream broke off",
                    instance=exchange.instance,
                    key=mask_key(record.key),
                    reason=ErrorReason.STREAM_DISCONNECT.value,
                    detail=describe_exception(exc),
                )
                if self._observer is not None:
                    self._observer.attempt_failed(exchange.instance, ErrorReason.STREAM_DISCONNECT)
            exchange.status = 499 if request.transport is None else 502
        finally:
            exchange.upstream_seconds += time.perf_counter() - started
            if clean:
                upstream.release()
            else:
                upstream.close()
        if clean:
            await response.write_eof()
        else:
            _abort(request)
        return response

    def _pattern(self, key: str) -> KeyPattern:
        """The prepared forms of `key` (made once per key, kept while the pool is that size)."""
        pattern = self._patterns.get(key)
        if pattern is None:
            if len(self._patterns) >= _MAX_PATTERNS:
                self._patterns.clear()
            pattern = self._patterns[key] = KeyPattern(key)
        return pattern

    def _inband_error(self, route: Route, record: KeyRecord, chunk: bytes) -> bool:
        """Classify and record an error event inside a 200 stream; True if there was one."""
        result = route.adapter.classify_stream_event(chunk)
        if result is None or result.reason is None:
            return False
        if self._observer is not None:
            self._observer.attempt_failed(route.config.name, result.reason)
        log.warning(
            "error event inside a stream",
            instance=route.config.name,
            key=mask_key(record.key),
            reason=result.reason.value,
        )
        self._pool.report(record, result)
        return True

    def _as_is(self, answer: _UpstreamAnswer, exchange: _Exchange, key: str) -> web.Response:
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

    def _fail(
        self,
        request: web.Request,
        route: Route | None,
        exc: GatewayError,
        exchange: _Exchange,
    ) -> web.StreamResponse:
        """The answer to a failure: an error response, or a broken stream once past `prepare()`.

        A second response written after the first one's headers would be sent
        inside the chunked body and end it cleanly, so a started stream is only
        aborted (issue 6: the client's response ends as an error).
        """
        if exchange.prepared is None:
            return self._error(request, route, exc, exchange)
        log.warning("stream ended by the gateway", instance=exchange.instance, reason=str(exc))
        exchange.status = int(getattr(exc, "status", 500))
        _abort(request)
        return exchange.prepared

    def _error(
        self,
        request: web.Request,
        route: Route | None,
        exc: GatewayError,
        exchange: _Exchange,
    ) -> web.Response:
        adapter = route.adapter if route else self._shapes[family_for_path(request.path)]
        status = int(getattr(exc, "status", 500))
        retry_after = (
            exc.retry_after if isinstance(exc, KeysCoolingDown | TooManyAuthFailures) else None
        )
        shaped = adapter.error_body(status, self._masker.mask_text(str(exc)), retry_after)
        response = web.Response(status=shaped.status, body=shaped.body, headers=shaped.headers)
        response.headers[X_REQUEST_ID] = exchange.request_id
        if isinstance(exc, MethodNotAllowed):
            response.headers["Allow"] = _ALLOW
        return response

    def _finish(self, exchange: _Exchange) -> None:
        seconds = time.perf_counter() - exchange.started
        if self._observer is not None:
            self._observer.request_done(
                exchange.instance, exchange.status, seconds, exchange.upstream_seconds
            )
        if self._access_log:
            log.info(
                "request",
                instance=exchange.instance,
                model=exchange.model,
                status=exchange.status,
                attempts=exchange.attempts,
                keys=[mask_key(k) for k in exchange.keys],
                duration_ms=round(seconds * 1000, 2),
            )


def _prepare(request: web.Request, route: Route, body: bytes) -> tuple[URL, CIMultiDict[str], str]:
    """The upstream URL, the headers to send (credentials still to be set) and the model."""
    raw_path = request.raw_path
    if not safe_path(raw_path):
        raise BadPath("the request path may not contain '.' or '..' segments")
    if KEY_PARAM in request.query:
        raw_path = strip_key_param(raw_path)
    model = route.adapter.extract_model(request.path, body)
    url = URL(route.base_url + raw_path, encoded=True)
    return url, upstream_headers(request.headers), model


def _names_model(route: Route, model: str, answer: _UpstreamAnswer | None) -> bool:
    """True when a model-not-found answer is about the configured model the request names.

    A 404 for a path the provider does not have, or one whose body does not
    name the model, is the client's error: no key is judged by it.
    """
    if not model or model not in route.configured_models or answer is None:
        return False
    return model.encode() in answer.body[:MAX_ERROR_BODY]


class _Rotation:
    """Which keys one request has used, and the retries and backoff it has left."""

    __slots__ = ("key_budget", "server_budget", "spent", "tried", "owed", "incident")

    def __init__(self, route: Route) -> None:
        self.key_budget = _Budget(route.key_retry, route.retry_enabled)
        self.server_budget = _Budget(route.server_retry, route.retry_enabled)
        self.spent: list[int] = []
        """Keys that failed the key's way: never again in this request."""
        self.tried: list[int] = []
        """Keys that failed server-side: the others are tried first."""
        self.owed: _Budget | None = None
        """The budget whose backoff is slept before a tried key is used again."""
        self.incident: Incident | None = None

    def excluded(self) -> Sequence[int]:
        """Every key not to pick now."""
        if not self.tried:
            return self.spent
        return [*self.spent, *self.tried]

    def exhausted(self, instance: str, model: str) -> GatewayError:
        """The error once every key this request may use was used."""
        incident = self.incident
        if incident is None:
            return NoUsableKey(f"every usable key of {instance}/{model} failed for this request")
        if incident.reason is ErrorReason.RATE_LIMITED:
            return KeysCoolingDown(incident.describe(), retry_after=BACKOFF_START)
        return NoUsableKey(incident.describe())


class _Budget:
    """Attempts left for one failure class, and the growing backoff between them."""

    __slots__ = ("left", "delay", "factor")

    def __init__(self, budget: RetryBudget, enabled: bool) -> None:
        self.left = budget.attempts if enabled else 0
        self.delay = budget.backoff
        self.factor = budget.backoff_factor

    def take(self) -> bool:
        """Use one retry; False when none is left."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    async def wait(self) -> None:
        """Sleep the current backoff, then grow it."""
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        self.delay *= self.factor


def _log_wire_failure(route: Route, exc: BaseException) -> None:
    """The full detail of a transport failure, for the log only (masked there)."""
    log.warning(
        "upstream attempt failed on the wire",
        instance=route.config.name,
        reason=failure_class(exc),
        detail=describe_exception(exc),
    )


def _abort(request: web.Request) -> None:
    """End a prepared response as an error: drop the connection before the final chunk."""
    transport = request.transport
    if transport is not None:
        transport.abort()
