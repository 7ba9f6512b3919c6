"""The one guard of the admin surface: every path under `/-/` (but the health probes) and `/metrics`.

The admin endpoints live in their own sub-application mounted at `/-/`, whose
only middleware is `AdminGuard`; a route added there later (`/-/api/...`,
`/-/ui`) is guarded without doing anything. Only the routes named public (the
health probes) pass untouched. `/metrics` sits outside `/-/` and is wrapped by
the same guard. The rules:

- with `server.admin_token` set, a request must carry it as
  `Authorization: Bearer <token>` (401 otherwise); wrong tokens count as
  failed attempts of the client's address (429 for a minute after too many);
- without it, only clients on a loopback address are served (403 for any
  other, saying how to set the token), so a gateway bound to 0.0.0.0 does not
  show its pool, events and metrics to the network by default.

Every answer of the surface is JSON; an unexpected failure of an admin
handler becomes a JSON 500, never aiohttp's plain-text page.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar, Final, final

import orjson
import structlog
from aiohttp import web

from llmgateway.web.auth_failures import AuthFailures, retry_after_header

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_BEARER: Final = "bearer "

TOKEN_HINT: Final = (
    'set server.admin_token (e.g. admin_token: "${LLMGW_ADMIN_TOKEN}", at least 16 '
    "characters) and send it as 'Authorization: Bearer <token>'"
)


def is_loopback(remote: str | None) -> bool:
    """True for a client on 127.0.0.0/8, ::1 (IPv4-mapped too) or a Unix socket."""
    if not remote:
        return True  # a Unix socket: only this host can connect
    try:
        address = ipaddress.ip_address(remote.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def admin_error(status: int, kind: str, message: str, **headers: str) -> web.Response:
    """An admin-surface error: `{"error": {"type", "message"}}`."""
    body = orjson.dumps({"error": {"type": kind, "message": message}})
    return web.Response(
        status=status, body=body, content_type="application/json", headers=headers or None
    )


@final
class AdminGuard:
    """The admin surface's access rule and safety net (an aiohttp middleware)."""

    __slots__ = ("_token", "_failures", "_public")
    __middleware_version__: ClassVar[int] = 1
    """Marks a new-style aiohttp middleware."""

    def __init__(
        self,
        admin_token: str,
        failures: AuthFailures | None = None,
        public: Iterable[str] = (),
    ) -> None:
        self._token = admin_token.encode()
        self._failures = failures
        self._public = frozenset(public)

    def use(self, admin_token: str) -> None:
        """Require `admin_token` from the next request on (a reload; "" means loopback only)."""
        self._token = admin_token.encode()

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse or serve `request`; every answer, errors included, is JSON.

        A request matched by a route named public is served as it is, unguarded.
        """
        if request.match_info.route.name in self._public:
            return await handler(request)
        refused = self.check(request)
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return admin_error(exc.status, "http_error", exc.reason)
        except Exception:  # the admin surface's outermost guard: JSON 500, never plain text
            log.exception("admin_request_failed", path=request.path)
            return admin_error(500, "internal_error", "the admin endpoint failed; see the log")

    def check(self, request: web.Request) -> web.Response | None:
        """None when `request` may be served, else the refusal to send."""
        if not self._token:
            if is_loopback(request.remote):
                return None
            return admin_error(
                403,
                "forbidden",
                "the admin endpoints answer only loopback clients while no admin token is "
                f"configured; {TOKEN_HINT}",
            )
        header = request.headers.get("Authorization", "")
        presented = header[: len(_BEARER)].lower() == _BEARER
        if presented:
            given = header[len(_BEARER) :].strip().encode()
            if hmac.compare_digest(given, self._token):
                return None
        if self._failures is not None:
            if presented:
                wait = self._failures.failed(request.remote, "admin")
            else:
                wait = self._failures.blocked_for(request.remote)
            if wait is not None:
                return admin_error(
                    429,
                    "too_many_failures",
                    "too many failed token attempts from this address; retry later",
                    **{"Retry-After": retry_after_header(wait)},
                )
        return admin_error(
            401,
            "unauthorized",
            "admin token required: send 'Authorization: Bearer <admin_token>'",
            **{"WWW-Authenticate": 'Bearer realm="llmgateway admin"'},
        )

    def wrap(self, handler: Handler) -> Handler:
        """`handler` behind this guard (for an admin route outside the `/-/` sub-application)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            return await self(request, handler)

        return guarded
