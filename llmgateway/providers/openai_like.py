"""The adapter of OpenAI and OpenAI-compatible APIs (Bearer key, JSON `model`).

Errors look like {"error": {"message", "type", "param", "code"}}; rate limits
come back with Retry-After or the `x-ratelimit-reset-requests|tokens` durations.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, final

import orjson

from llmgateway.core.constants import ProviderType
from llmgateway.providers.http_adapter import HttpAdapter
from llmgateway.providers.retry_after import header_retry_after, latest_reset, parse_duration

_GATEWAY_ERRORS: Final[Mapping[int, tuple[str, str | None]]] = MappingProxyType(
    {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        413: ("invalid_request_error", "request_too_large"),
        429: ("requests", "rate_limit_exceeded"),
        500: ("server_error", None),
        502: ("server_error", "upstream_unavailable"),
        503: ("server_error", "service_unavailable"),
        504: ("server_error", "timeout"),
    }
)
"""(type, code) of the errors the gateway itself returns, as OpenAI writes them."""

_MODEL_MARKER: Final = b'"model"'


def json_body_model(body: bytes) -> str:
    """The top-level string `model` of a JSON request body, or "" (never raises).

    The body is parsed only when it mentions "model" at all.
    """
    if not body or _MODEL_MARKER not in body:
        return ""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(doc, dict):
        return ""
    model = doc.get("model")
    return model if isinstance(model, str) else ""


@final
class OpenAILikeAdapter(HttpAdapter):
    """OpenAI-compatible APIs: `Authorization: Bearer <key>`, model in the JSON body."""

    provider_type = ProviderType.OPENAI_LIKE
    key_header: ClassVar[str] = "Authorization"
    key_prefix: ClassVar[str] = "Bearer "

    def extract_model(self, path: str, body: bytes) -> str:
        """The JSON body's top-level `model`, or ""."""
        return json_body_model(body)

    def retry_after(self, headers: Mapping[str, str], parsed: Any | None) -> float | None:
        """Retry-After (or retry-after-ms), else the reset of the exhausted rate limit."""
        waited = header_retry_after(headers, self._clock())
        if waited is not None:
            return waited
        return latest_reset(
            headers, ("requests", "tokens"), "x-ratelimit-{field}-{limit}", parse_duration
        )

    def error_json(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        """{"error": {"message", "type", "param": null, "code"}} as the OpenAI API writes it."""
        default = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
        type_, code = _GATEWAY_ERRORS.get(status, default)
        return {"error": {"message": message, "type": type_, "param": None, "code": code}}
