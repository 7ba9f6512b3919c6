"""What crosses the gateway in each direction: credentials, hop-by-hop headers, paths.

Pure functions and start-up constants used by the request path: which client
header or query parameter carried the gateway token, which headers are dropped
both ways, and whether a client path stays under `api_base_url`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final
from urllib.parse import unquote, unquote_plus

from multidict import CIMultiDict, CIMultiDictProxy, istr

from llmgateway.core.errors import GatewayAuthError, NoToken
from llmgateway.providers.base import CREDENTIAL_HEADERS

AUTHORIZATION: Final = istr("Authorization")
X_API_KEY: Final = istr("x-api-key")
X_GOOG_API_KEY: Final = istr("x-goog-api-key")
KEY_PARAM: Final = "key"

HOP_BY_HOP: Final = frozenset(
    (
        # RFC 9110 §7.6.1 (connection-specific fields) plus legacy ones still seen in the wild.
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    )
)
"""Headers that describe one connection and are never forwarded (either way), lower-cased.

Header names are compared lower-cased: `istr` compares and hashes like a plain
`str`, so a set of `istr` would let `transfer-encoding` through.
"""

DROPPED_UPSTREAM: Final = (
    HOP_BY_HOP
    | frozenset(("host", "content-length", "accept-encoding"))
    | frozenset(h.lower() for h in CREDENTIAL_HEADERS)
)
"""Client headers never sent upstream: hop-by-hop, framing, and every credential carrier."""

DROPPED_DOWNSTREAM: Final = HOP_BY_HOP | frozenset(("content-length", "date", "server"))
"""Upstream headers not copied to the client (aiohttp sets framing, date and server)."""

_BEARER = re.compile(r"\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)
_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)")


def client_token(headers: CIMultiDictProxy[str], query_key: str | None) -> str:
    """The gateway token the client sent, from whichever carrier held it.

    Raises GatewayAuthError when no token is present or when two carriers
    hold different tokens (refused, not guessed between).
    """
    found: str | None = None
    for auth in headers.getall(AUTHORIZATION, ()):
        match = _BEARER.match(auth)
        if match is None:
            raise GatewayAuthError("the Authorization header must be 'Bearer <token>'")
        if found is not None and match.group(1) != found:
            raise GatewayAuthError("two different credentials were sent in one request")
        found = match.group(1)
    carried = [*headers.getall(X_API_KEY, ()), *headers.getall(X_GOOG_API_KEY, ())]
    if query_key is not None:
        carried.append(query_key)
    for value in carried:
        value = value.strip()
        if found is not None and value != found:
            raise GatewayAuthError("two different credentials were sent in one request")
        found = value
    if not found:
        raise NoToken(
            "no gateway token: send it as 'Authorization: Bearer <token>', x-api-key, "
            "x-goog-api-key or the key query parameter"
        )
    return found


def _with_connection_names(
    dropped: frozenset[str], headers: CIMultiDictProxy[str]
) -> frozenset[str]:
    """`dropped` plus the fields the `Connection` header names (RFC 9110 §7.6.1)."""
    if "Connection" not in headers:
        return dropped
    named = {t.strip().lower() for v in headers.getall("Connection") for t in v.split(",")}
    named -= dropped  # usually just "keep-alive": no new set is built for it
    named -= _CONNECTION_OPTIONS
    return dropped | named if named else dropped


_CONNECTION_OPTIONS: Final = frozenset(("", "close"))
"""`Connection` tokens that are options, not field names."""


def upstream_headers(client: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The client's headers minus credentials, hop-by-hop fields and those `Connection` names."""
    out: CIMultiDict[str] = CIMultiDict()
    dropped = _with_connection_names(DROPPED_UPSTREAM, client)
    for name, value in client.items():
        if name.lower() not in dropped:
            out.add(name, value)
    out[istr("Accept-Encoding")] = "identity"
    return out


def downstream_headers(
    upstream: CIMultiDictProxy[str],
    request_id: str,
    mask: Callable[[str], str] | None = None,
    *,
    screen: Callable[[str], bool] | None = None,
) -> CIMultiDict[str]:
    """The upstream's response headers for the client, plus `x-request-id`.

    Hop-by-hop fields are dropped, including those the upstream's own
    `Connection` header names. A provider's own `x-request-id` (OpenAI's
    `req_…`, needed for its support) moves to `x-upstream-request-id`. With
    `mask`, every value (an upstream may echo a key in a header), and then
    every name too, goes through it. All values are first checked together,
    by `screen` when given (a cheap test for the secrets expected there),
    else by `mask` itself; one by one only when that check found something.
    """
    out: CIMultiDict[str] = CIMultiDict()
    dropped = _with_connection_names(DROPPED_DOWNSTREAM, upstream)
    for name, value in upstream.items():
        lowered = name.lower()
        if lowered not in dropped:
            out.add(X_UPSTREAM_REQUEST_ID if lowered == "x-request-id" else name, value)
    if mask is not None and out:
        values = "\n".join(out.values())
        if screen(values) if screen is not None else mask(values) != values:
            out = CIMultiDict((mask(name), mask(value)) for name, value in out.items())
    out[X_REQUEST_ID] = request_id
    return out


X_REQUEST_ID: Final = istr("x-request-id")
X_UPSTREAM_REQUEST_ID: Final = istr("x-upstream-request-id")


def safe_path(raw_path: str) -> bool:
    """True when the client path cannot climb out of `api_base_url`.

    Dot segments are refused raw and percent-encoded (`%2e%2e`), as are
    encoded slashes that would hide them.
    """
    path = raw_path.split("?", 1)[0]
    if not path.startswith("/"):
        return False
    if "." not in path and "%" not in path:
        return True
    if _DOT_SEGMENT.search(path):
        return False
    if "%" in path:
        decoded = unquote(unquote(path))
        if _DOT_SEGMENT.search(decoded) or "\\" in decoded:
            return False
    return True


def strip_key_param(raw_path: str) -> str:
    """The path and query with the `key` query parameter removed, verbatim otherwise.

    Names are compared decoded, as aiohttp's `request.query` reads them: a
    token sent as `k%65y=...` authenticates, so it must not reach the upstream.
    """
    path, sep, query = raw_path.partition("?")
    if not sep:
        return raw_path
    kept = [p for p in query.split("&") if p and unquote_plus(p.split("=", 1)[0]) != KEY_PARAM]
    return f"{path}?{'&'.join(kept)}" if kept else path
