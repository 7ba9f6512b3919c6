"""Translation of transport exceptions into CheckResults, in one function.

Everything aiohttp or the OS can raise while talking to an upstream is
classified here and nowhere else: one translation at the boundary.
The message of the result names the class of failure only ("connection
refused", "the upstream sent an invalid HTTP response"): it is stored, shown
in `/-/status` and returned to clients, so it never carries the upstream URL
or bytes the upstream sent. `describe_exception` gives the full detail, for
the log (which masks it).
"""

from __future__ import annotations

import ssl
from typing import Final

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from llmgateway.core.constants import ErrorReason
from llmgateway.core.models import CheckResult

_MAX_DETAIL: Final = 300


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
    return CheckResult(reason=_reason(exc), status_code=None, message=failure_class(exc))


def describe_exception(exc: BaseException) -> str:
    """`Type: text` of an exception, in full (for the log only: it may hold URLs and bytes)."""
    try:
        text = str(exc)
    except (AttributeError, TypeError, ValueError):  # some aiohttp errors are half-built
        text = ""
    return f"{type(exc).__name__}: {text}"[:_MAX_DETAIL] if text else type(exc).__name__


def failure_class(exc: BaseException) -> str:
    """What went wrong, in a few words that hold nothing the upstream sent."""
    # Order matters: subclasses before their bases (ServerTimeoutError is also a
    # ClientConnectionError, ClientConnectorCertificateError a ClientConnectorError).
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the upstream response broke off"
    if isinstance(exc, TimeoutError):
        return "the upstream did not answer in time"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "the TLS handshake with the upstream failed"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the upstream host name did not resolve"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connect_failure(exc.os_error)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the upstream closed the connection"
    if isinstance(exc, ConnectionResetError | aiohttp.ClientConnectionResetError):
        return "the connection to the upstream was reset"
    if isinstance(exc, aiohttp.ClientResponseError | HttpProcessingError):
        return "the upstream sent an invalid HTTP response"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the upstream URL is invalid"
    if isinstance(exc, ssl.SSLError):
        return "the TLS handshake with the upstream failed"
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | aiohttp.ClientOSError):
        return "the connection to the upstream failed"
    if isinstance(exc, OSError):
        return "a network error reaching the upstream"
    return "an unexpected error talking to the upstream"


def _connect_failure(os_error: OSError) -> str:
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(os_error, TimeoutError):
        return "the upstream did not answer in time"
    if isinstance(os_error, ssl.SSLError):
        return "the TLS handshake with the upstream failed"
    return "the upstream could not be reached"


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
