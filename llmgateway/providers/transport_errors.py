"""Translation of transport exceptions into CheckResults, in one function.

Everything aiohttp or the OS can raise while talking to an upstream is
classified here and nowhere else (the boundary translation of STYLE.md §2).
"""

from __future__ import annotations

from typing import Final

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from llmgateway.core.constants import ErrorReason
from llmgateway.core.models import CheckResult

_MAX_MESSAGE: Final = 300


def classify_exception(exc: BaseException) -> CheckResult:
    """The CheckResult of a call that failed with `exc` before a usable response.

    - a truncated body (`ClientPayloadError`) → stream_disconnect;
    - any timeout (`asyncio.TimeoutError`, aiohttp's `ServerTimeoutError`) → timeout;
    - connection refused/reset/closed, DNS or TLS failures → network_error;
    - protocol garbage (HTTP parser errors, `ClientResponseError`, other
      connection errors) → server_error;
    - anything else → unknown.

    None of these is the key's fault. `asyncio.CancelledError` must be
    re-raised by the caller, never classified.
    """
    return CheckResult(reason=_reason(exc), status_code=None, message=_describe(exc))


def _describe(exc: BaseException) -> str:
    """`Type: text` of an exception; some aiohttp errors fail in __str__ when half-built."""
    try:
        text = str(exc)
    except (AttributeError, TypeError, ValueError):
        text = ""
    return f"{type(exc).__name__}: {text}"[:_MAX_MESSAGE] if text else type(exc).__name__


def _reason(exc: BaseException) -> ErrorReason:
    # Order matters: ServerTimeoutError is also a ClientConnectionError, and
    # ClientConnectionResetError also a ConnectionError.
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ErrorReason.STREAM_DISCONNECT
    if isinstance(exc, TimeoutError):
        return ErrorReason.TIMEOUT
    if isinstance(
        exc,
        aiohttp.ClientConnectorError
        | aiohttp.ServerDisconnectedError
        | aiohttp.ClientOSError
        | ConnectionError,
    ):
        return ErrorReason.NETWORK_ERROR
    if isinstance(exc, aiohttp.ClientError | HttpProcessingError):
        return ErrorReason.SERVER_ERROR
    if isinstance(exc, OSError):
        return ErrorReason.NETWORK_ERROR
    return ErrorReason.UNKNOWN
