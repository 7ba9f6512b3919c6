"""A hostile upstream: it hands the key it was sent back in every way a client could read it.

It speaks the three API families (the fake upstream's families build its
success answers and streams) and, per key, misbehaves in one of the ways of
`Hostility`: the key echoed in response headers and in the success body,
quoted in error messages (raw, JSON `\\u`-escaped, percent-encoded, base64),
quoted in an error event inside a stream, a 10 MB error body, an answer that
is not valid HTTP (a header line longer than any client accepts, holding the
key). A TRACE (or any method but GET/POST/PUT/PATCH/DELETE) is answered the
way TRACE is meant to be: the request head echoed back, credentials included.
Every request is recorded (`requests`), so a test can prove nothing was sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, replace
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, Self, final

from aiohttp import web

from llmgateway.core.constants import ProviderType
from tests.fakes.anthropic_family import AnthropicFamily, is_anthropic
from tests.fakes.family import Family
from tests.fakes.gemini_family import GeminiFamily, is_gemini
from tests.fakes.openai_family import OpenAIFamily

HUGE_ERROR_SIZE: Final = 10 * 1024 * 1024
"""Bytes of the HUGE_ERROR body."""

_ECHO: Final = "@@KEY-FORMS@@"
"""Placeholder replaced, after JSON encoding, by the key's escaped and encoded forms."""


class Hostility(StrEnum):
    """How the hostile upstream answers a request made with a given key."""

    OK = "ok"
    """A plain success, no echo."""
    ECHO = "echo"
    """Success; the key in five response headers (every form) and raw in the reply text
    (streamed: the chunk holding it is written in two halves, split inside the key)."""
    QUOTE_BAD_REQUEST = "quote_bad_request"
    """400 (returned to the client as is) quoting the key in every form, echo headers too."""
    QUOTE_INVALID = "quote_invalid"
    """A fatal error (401/403) quoting the key: the key is condemned and the message stored."""
    QUOTE_RATE_LIMIT = "quote_rate_limit"
    """429 with Retry-After, quoting the key."""
    STREAM_ERROR = "stream_error"
    """Streams: some content, then an error event quoting the key (fatal). Otherwise OK."""
    HUGE_ERROR = "huge_error"
    """500 with a 10 MB body that starts by quoting the key."""
    INVALID_HTTP = "invalid_http"
    """Not valid HTTP: a header line of 9,000 bytes holding the key, then the connection closes."""


def json_escaped(text: str) -> str:
    """Every character as a JSON `\\uXXXX` escape."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def percent_encoded(text: str) -> str:
    """Every byte percent-encoded."""
    return "".join(f"%{b:02X}" for b in text.encode())


def base64_encoded(text: str) -> str:
    """Standard base64 of the UTF-8 bytes."""
    return base64.b64encode(text.encode()).decode()


def key_forms(key: str) -> dict[str, str]:
    """The four forms a key must never reach a client, a log or the store in."""
    return {
        "raw": key,
        "json": json_escaped(key),
        "percent": percent_encoded(key),
        "base64": base64_encoded(key),
    }


def echo_headers(key: str) -> dict[str, str]:
    """Response headers carrying the key in every form (and inside an encoded credential)."""
    return {
        "x-echo-key": key,
        "x-echo-json": json_escaped(key),
        "x-echo-percent": percent_encoded(key),
        "x-echo-base64": base64_encoded(key),
        "x-echo-authorization": base64_encoded(f"Bearer {key}"),
    }


def _with_forms(document: dict[str, Any], key: str) -> bytes:
    """`document` as JSON with `_ECHO` replaced by an object of the key's non-raw forms.

    The escaped form must reach the wire as written (`\\u0073...`), so it is put in
    after encoding.
    """
    forms = {
        "json": json_escaped(key),
        "percent": percent_encoded(key),
        "base64": base64_encoded(key),
    }
    echo = "{" + ",".join(f'"{name}":"{value}"' for name, value in forms.items()) + "}"
    return json.dumps(document).replace(json.dumps(_ECHO), echo).encode()


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request as the hostile upstream received it."""

    method: str
    path: str
    key: str | None
    family: ProviderType


@final
class HostileUpstream:
    """The hostile upstream on 127.0.0.1 (see the module docstring).

    `set_key(key, Hostility.X)` chooses how a key is answered; unknown keys
    get a plain success.
    """

    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        self._rules: dict[str, Hostility] = {}
        self._families: dict[ProviderType, Family] = {
            ProviderType.OPENAI_LIKE: OpenAIFamily(),
            ProviderType.ANTHROPIC: AnthropicFamily(),
            ProviderType.GEMINI: GeminiFamily(),
        }
        self._runner: web.ServerRunner | None = None
        self._port: int | None = None

    def set_key(self, key: str, hostility: Hostility) -> None:
        """Answer requests made with `key` this way."""
        self._rules[key] = hostility

    @property
    def url(self) -> str:
        """The origin, e.g. "http://127.0.0.1:40123"."""
        if self._port is None:
            raise RuntimeError("HostileUpstream is not started")
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> Self:
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- serving -----------------------------------------------------------------------------

    def _family_of(self, request: web.BaseRequest) -> Family:
        if is_gemini(request.path):
            return self._families[ProviderType.GEMINI]
        if is_anthropic(request.method, request.path, request.headers):
            return self._families[ProviderType.ANTHROPIC]
        return self._families[ProviderType.OPENAI_LIKE]

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        family = self._family_of(request)
        key = family.key_of(request.headers, request.query)
        self.requests.append(SeenRequest(request.method, request.path, key, family.provider_type))
        if request.method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            head = f"{request.method} {request.raw_path} HTTP/1.1\r\n" + "".join(
                f"{name}: {value}\r\n" for name, value in request.headers.items()
            )
            return web.Response(body=head.encode(), content_type="message/http")
        call = family.parse(request.method, request.path, request.query, body, 6)
        hostility = self._rules.get(key or "", Hostility.OK)
        kind = family.provider_type
        match hostility:
            case Hostility.INVALID_HTTP:
                return await self._invalid_http(request, key or "")
            case Hostility.HUGE_ERROR:
                return _huge_error(key or "")
            case Hostility.QUOTE_BAD_REQUEST:
                return _error(kind, 400, key or "", headers=echo_headers(key or ""))
            case Hostility.QUOTE_INVALID:
                return _error(kind, 403 if kind is ProviderType.GEMINI else 401, key or "")
            case Hostility.QUOTE_RATE_LIMIT:
                return _error(kind, 429, key or "", headers={"Retry-After": "30"})
            case Hostility.ECHO:
                call = replace(call, pieces=(*call.pieces, f" echo {key}"))
                headers = echo_headers(key or "")
            case _:
                headers = {}
        if not call.stream:
            reply = family.success(call)
            return web.Response(
                status=reply.status, headers={**reply.headers, **headers}, body=reply.body
            )
        events = family.stream(call)
        if hostility is Hostility.STREAM_ERROR:
            events = [*events[:2], _stream_error(kind, key or "")]
        return await self._stream(request, family, events, headers, key or "")

    async def _stream(
        self,
        request: web.BaseRequest,
        family: Family,
        events: list[bytes],
        headers: dict[str, str],
        key: str,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": family.stream_content_type, **headers}
        )
        await response.prepare(request)
        raw = key.encode() if headers else b""  # ECHO only: error events go in one write
        for event in events:
            at = event.find(raw) if raw else -1
            if at == -1:
                await response.write(event)
                continue
            cut = at + len(raw) // 2  # the key itself is split between two writes
            await response.write(event[:cut])
            await asyncio.sleep(0.02)
            await response.write(event[cut:])
        await response.write_eof()
        return response

    async def _invalid_http(self, request: web.BaseRequest, key: str) -> web.StreamResponse:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("hostile upstream: the client has gone")
        transport.write(b"HTTP/1.1 200 OK\r\nX-Echo: " + key.encode() + b"A" * 9000 + b"\r\n\r\n{}")
        transport.close()
        await asyncio.Future()  # cancelled by aiohttp once the connection is gone
        raise AssertionError("unreachable")


def _message(kind: ProviderType, status: int, key: str) -> str:
    if kind is ProviderType.GEMINI and status == 403:
        return f"Consumer 'api_key:{key}' has been suspended."
    if status == 429:
        return f"Rate limit reached for requests with key {key}; retry later."
    if status == 400:
        return f"Invalid request sent with api_key {key!r}."
    return f"Incorrect API key provided: {key}."


def _error(
    kind: ProviderType, status: int, key: str, headers: dict[str, str] | None = None
) -> web.Response:
    message = _message(kind, status, key)
    document: dict[str, Any]
    match kind:
        case ProviderType.OPENAI_LIKE:
            codes = {400: "invalid_value", 401: "invalid_api_key", 429: "rate_limit_exceeded"}
            types = {400: "invalid_request_error", 401: "invalid_request_error", 429: "requests"}
            document = {
                "error": {
                    "message": message,
                    "type": types[status],
                    "param": None,
                    "code": codes[status],
                    "echo": _ECHO,
                }
            }
        case ProviderType.ANTHROPIC:
            types = {
                400: "invalid_request_error",
                401: "authentication_error",
                429: "rate_limit_error",
            }
            document = {
                "type": "error",
                "error": {"type": types[status], "message": message, "echo": _ECHO},
            }
        case ProviderType.GEMINI:
            statuses = {
                400: "INVALID_ARGUMENT",
                403: "PERMISSION_DENIED",
                429: "RESOURCE_EXHAUSTED",
            }
            document = {
                "error": {
                    "code": status,
                    "message": message,
                    "status": statuses[status],
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "CONSUMER_SUSPENDED" if status == 403 else "OTHER",
                            "metadata": {"consumer": f"projects/x/apiKeys/{key}", "echo": _ECHO},
                        }
                    ],
                }
            }
    return web.Response(
        status=status,
        body=_with_forms(document, key),
        content_type="application/json",
        headers=headers,
    )


def _stream_error(kind: ProviderType, key: str) -> bytes:
    """A fatal in-band error event quoting the key (raw, and its other forms beside)."""
    match kind:
        case ProviderType.OPENAI_LIKE:
            document: dict[str, Any] = {
                "error": {
                    "message": f"Incorrect API key provided: {key}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "echo": _ECHO,
                }
            }
            return b"data: " + _with_forms(document, key) + b"\n\n"
        case ProviderType.ANTHROPIC:
            document = {
                "type": "error",
                "error": {
                    "type": "authentication_error",
                    "message": f"invalid x-api-key {key}",
                    "echo": _ECHO,
                },
            }
            return b"event: error\ndata: " + _with_forms(document, key) + b"\n\n"
        case ProviderType.GEMINI:
            document = {
                "error": {
                    "code": 403,
                    "message": f"Consumer 'api_key:{key}' has been suspended.",
                    "status": "PERMISSION_DENIED",
                    "echo": _ECHO,
                }
            }
            return b"data: " + _with_forms(document, key) + b"\r\n\r\n"


def _huge_error(key: str) -> web.Response:
    head = json.dumps({"error": {"message": f"upstream crashed handling key {key}: "}})[:-3]
    padding = b"x" * (HUGE_ERROR_SIZE - len(head) - 4)
    return web.Response(
        status=500, body=head.encode() + padding + b'"}}', content_type="application/json"
    )
