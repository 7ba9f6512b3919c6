"""The gateway's request path: authenticate, pick a key, proxy, classify, retry, relay.

`Gateway.handle` reads top to bottom: authenticate, read the call, then
rotate keys (`Rotation`) until an attempt succeeds and is relayed (`Relay`),
or no attempt is left. Nothing reaches the client before the relay calls
`prepare()`; until then a key failure only steers the rotation. Nothing here
touches the database or compiles anything: the per-instance `Route` tables are
built once at start-up.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Mapping
from typing import Final, final

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from structlog.contextvars import bind_contextvars, reset_contextvars
from yarl import URL

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.core.constants import ProviderType
from llmgateway.core.errors import (
    BodyTooLarge,
    ClientRequestError,
    GatewayAuthError,
    GatewayError,
    GatewayFailure,
    KeysCoolingDown,
    MethodNotAllowed,
    NoToken,
    TooManyAuthFailures,
    UpstreamTimeout,
)
from llmgateway.core.logs import mask_key
from llmgateway.core.masking import Masker
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.pool.key_pool import KeyPool
from llmgateway.providers import classify_exception, family_for_path
from llmgateway.providers.base import ProviderAdapter
from llmgateway.providers.upstream import WIRE_ERRORS, UpstreamAnswer, call_upstream
from llmgateway.web.auth_failures import AuthFailures
from llmgateway.web.exchange import Exchange, RequestObserver, Route, shape_adapter
from llmgateway.web.forwarding import (
    KEY_PARAM,
    X_REQUEST_ID,
    client_token,
    safe_path,
    strip_key_param,
    upstream_headers,
)
from llmgateway.web.relay import Relay, abort, log_wire_failure
from llmgateway.web.rotation import Rotation

log = structlog.get_logger("llmgateway.gateway")

PROXIED_METHODS: Final = frozenset(("GET", "POST", "PUT", "PATCH", "DELETE"))
"""The only methods sent upstream; any other (TRACE, CONNECT, ...) gets 405."""

_ALLOW: Final = ", ".join(sorted(PROXIED_METHODS))


class BadPath(ClientRequestError):
    """The client path would climb out of `api_base_url`."""

    status = 400


class RequestTimeout(ClientRequestError):
    """The client did not send its body within `timeouts.total`."""

    status = 408


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
        self._relay = Relay(pool, self._masker, observer)
        self._auth_failures = auth_failures
        self._access_log = accessor.logging.access_log
        self._max_body = int(accessor.server.max_body_mb * 1024 * 1024)
        self._routes = _routes(accessor, adapters)
        self._shapes = {t: shape_adapter(t) for t in ProviderType}
        # Request ids: a random per-process prefix and a counter (unique, and far cheaper
        # than a uuid4 per request).
        self._id_prefix = f"{secrets.token_hex(8)}-"
        self._ids = itertools.count(1)

    def use(self, accessor: ConfigAccessor, adapters: Mapping[str, ProviderAdapter]) -> None:
        """Serve the configuration `accessor` through `adapters` from the next request on.

        A request in flight keeps the `Route` (its instance's configuration
        and adapter) it authenticated with, to its end.
        """
        routes = _routes(accessor, adapters)
        self._access_log = accessor.logging.access_log
        self._max_body = int(accessor.server.max_body_mb * 1024 * 1024)
        self._routes = routes

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Proxy one client request; every exit answers in the provider's error shape."""
        exchange = Exchange(
            request_id=request.headers.get(X_REQUEST_ID) or f"{self._id_prefix}{next(self._ids):x}",
            started=time.perf_counter(),
        )
        # Every log line of this request carries its id (merged from the context).
        bound = bind_contextvars(request_id=exchange.request_id)
        try:
            return await self._handle(request, exchange)
        finally:
            reset_contextvars(**bound)

    async def _handle(self, request: web.Request, exchange: Exchange) -> web.StreamResponse:
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
            log.exception("request_failed_inside_gateway", instance=exchange.instance)
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
        self, request: web.Request, route: Route, exchange: Exchange
    ) -> web.StreamResponse:
        """Rotate keys until an attempt succeeds and is relayed, or no attempt is left."""
        body = await self._read_body(request)
        exchange.body_read = True
        url, headers, model = _prepare(request, route, body)
        exchange.model = model
        instance = route.config.name
        slot_model = route.status_model(model)
        rotation = Rotation(route)
        while True:
            record = await rotation.next_key(self._pool, instance, slot_model)
            result, answer = await self._attempt(
                request.method, url, headers, body, route, record, exchange
            )
            if answer is not None and answer.response is not None:
                return await self._relay.success(request, route, record, answer.response, exchange)
            self._attempt_failed(instance, record, result)
            if not rotation.failed(self._pool, model, record, result, answer):
                last = rotation.last_word(instance, model, result, answer)
                if isinstance(last, UpstreamAnswer):
                    return self._relay.as_is(last, exchange, record.key)
                raise last

    async def _attempt(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: bytes,
        route: Route,
        record: KeyRecord,
        exchange: Exchange,
    ) -> tuple[CheckResult, UpstreamAnswer | None]:
        """Send once with `record`'s key; the verdict, and the answer unless the wire failed.

        A success comes back unread (the relay's to read); a failure's body is read and kept.
        """
        route.adapter.apply_key(headers, record.key)
        exchange.attempts += 1
        exchange.keys.append(record.key)
        sent = time.perf_counter()
        try:
            answer = await call_upstream(
                self._session, route.adapter, method, url, headers, body or None, route.limits
            )
        except WIRE_ERRORS as exc:
            log_wire_failure(route, exc)
            return classify_exception(exc), None
        finally:
            exchange.upstream_seconds += time.perf_counter() - sent
        return answer.result, answer

    def _attempt_failed(self, instance: str, record: KeyRecord, result: CheckResult) -> None:
        """Count and log (at debug) one failed attempt; the rotation decides what follows."""
        if self._observer is not None and result.reason is not None:
            self._observer.attempt_failed(instance, result.reason)
        log.debug(
            "upstream_attempt_failed",
            instance=instance,
            key=mask_key(record.key),
            reason=result.reason.value if result.reason else None,
            status_code=result.status_code,
        )

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

    def _fail(
        self,
        request: web.Request,
        route: Route | None,
        exc: GatewayError,
        exchange: Exchange,
    ) -> web.StreamResponse:
        """The answer to a failure: an error response, or a broken stream once past `prepare()`.

        A second response written after the first one's headers would be sent
        inside the chunked body and end it cleanly, so a started stream is only
        aborted.
        """
        if exchange.prepared is None:
            return self._error(request, route, exc, exchange)
        log.warning("stream_ended_by_gateway", instance=exchange.instance, reason=str(exc))
        exchange.status = int(getattr(exc, "status", 500))
        abort(request)
        return exchange.prepared

    def _error(
        self,
        request: web.Request,
        route: Route | None,
        exc: GatewayError,
        exchange: Exchange,
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

    def _finish(self, exchange: Exchange) -> None:
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


def _routes(accessor: ConfigAccessor, adapters: Mapping[str, ProviderAdapter]) -> dict[str, Route]:
    """Client token → route of every enabled instance that has one."""
    routes: dict[str, Route] = {}
    for provider in accessor.enabled_providers():
        token = provider.access_control.gateway_access_token
        if token:
            routes[token] = Route.of(provider, adapters[provider.name])
    return routes
