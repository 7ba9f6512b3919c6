"""What every `/-/api/` handler shares: reading a bounded JSON body, answering, refusing.

`api_errors` is the sub-application's middleware: an `ApiError` raised by a
handler (or aiohttp's own 404/405/413) becomes `{"error": {"message",
"code"}}` with its status. Bodies are read from the stream with the API's
own limit (`MAX_BODY_BYTES`), not the proxy's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from llmgateway.core.threads import on_thread_when
from llmgateway.web.api.shapes import error_body
from llmgateway.web.api.validation import MAX_BODY_BYTES, ApiError, parse_json_object, too_large

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

READ_CHUNK: Final = 1 << 16
PARSE_ON_THREAD: Final = 1 << 18
"""Bodies larger than this (256 KiB: an import of thousands of keys) are parsed on a thread."""


def answer(document: dict[str, Any], status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")


def refusal(error: ApiError) -> web.Response:
    """The answer of a refused request."""
    return answer(error_body(error.code, error.message), error.status)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, read up to `MAX_BODY_BYTES` (413 beyond)."""
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise too_large()
    body = bytearray()
    while chunk := await request.content.read(READ_CHUNK):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large()
    return await on_thread_when(len(body) > PARSE_ON_THREAD, parse_json_object, bytes(body))


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal of the API in its JSON shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return refusal(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return refusal(ApiError(exc.status, code, f"{exc.reason}: {request.method} {request.path}"))
