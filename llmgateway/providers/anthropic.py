"""The adapter of the Anthropic Messages API (`x-api-key`, JSON `model`).

Errors look like {"type": "error", "error": {"type", "message"}}; rate limits
come with `retry-after` and `anthropic-ratelimit-*-reset` RFC 3339 times; a
streamed error is an `event: error` inside a 200 response.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, final

from llmgateway.config.defaults import ANTHROPIC_VERSION
from llmgateway.core.constants import ProviderType
from llmgateway.providers.http_adapter import HttpAdapter
from llmgateway.providers.openai_like import json_body_model
from llmgateway.providers.retry_after import header_retry_after, latest_reset, parse_rfc3339_wait

_RATE_LIMITS: Final = ("requests", "tokens", "input-tokens", "output-tokens")

_GATEWAY_ERROR_TYPES: Final[Mapping[int, str]] = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        502: "api_error",
        503: "overloaded_error",
        504: "timeout_error",
        529: "overloaded_error",
    }
)
"""`error.type` of the errors the gateway itself returns, as Anthropic names them."""


@final
class AnthropicAdapter(HttpAdapter):
    """Anthropic: `x-api-key: <key>`, model in the JSON body, `anthropic-version` on probes."""

    provider_type = ProviderType.ANTHROPIC
    key_header: ClassVar[str] = "x-api-key"

    def extract_model(self, path: str, body: bytes) -> str:
        """The JSON body's top-level `model`, or ""."""
        return json_body_model(body)

    def probe_headers(self) -> dict[str, str]:
        """JSON content type plus the API version every Anthropic request must name."""
        return {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}

    def is_stream_error(self, doc: Mapping[str, Any]) -> bool:
        """An `event: error` payload: {"type": "error", "error": {...}}."""
        return doc.get("type") == "error" and isinstance(doc.get("error"), dict)

    def retry_after(self, headers: Mapping[str, str], parsed: Any | None) -> float | None:
        """retry-after, else the latest reset of the exhausted `anthropic-ratelimit-*` limits."""
        now = self._clock()
        waited = header_retry_after(headers, now)
        if waited is not None:
            return waited
        return latest_reset(
            headers,
            _RATE_LIMITS,
            "anthropic-ratelimit-{limit}-{field}",
            lambda value: parse_rfc3339_wait(value, now),
        )

    def error_json(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        """{"type": "error", "error": {"type", "message"}} as the Anthropic API writes it."""
        default = "api_error" if status >= 500 else "invalid_request_error"
        error_type = _GATEWAY_ERROR_TYPES.get(status, default)
        return {"type": "error", "error": {"type": error_type, "message": message}}
