"""The adapter of the Gemini API (`x-goog-api-key`, model in the URL path).

Errors are google.rpc.Status documents {"error": {"code", "message", "status",
"details"}}; a rate limit's wait is the RetryInfo detail's `retryDelay`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, final
from urllib.parse import unquote

from llmgateway.core.constants import ProviderType
from llmgateway.providers.error_rules import first_text
from llmgateway.providers.http_adapter import HttpAdapter
from llmgateway.providers.retry_after import header_retry_after, parse_duration

MODEL_IN_PATH: Final = re.compile(r"/models/([^/:?#]+):[A-Za-z]+")
"""`.../models/{model}:generateContent|streamGenerateContent|countTokens|embedContent|...`."""

_RETRY_DELAY_PATH: Final = ("error", "details", "*", "retryDelay")

_GATEWAY_STATUSES: Final[Mapping[int, str]] = MappingProxyType(
    {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        413: "INVALID_ARGUMENT",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        502: "UNAVAILABLE",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }
)
"""google.rpc.Code names of the errors the gateway itself returns."""


def _google_duration(seconds: float) -> str:
    return f"{max(0, math.ceil(seconds))}s"


@final
class GeminiAdapter(HttpAdapter):
    """Gemini: `x-goog-api-key: <key>`, model in `models/{model}:method` of the path."""

    provider_type = ProviderType.GEMINI
    key_header: ClassVar[str] = "x-goog-api-key"

    def extract_model(self, path: str, body: bytes) -> str:
        """The `{model}` of `.../models/{model}:method` in the path, or ""."""
        found = MODEL_IN_PATH.search(path.partition("?")[0])
        return unquote(found.group(1)) if found is not None else ""

    def retry_after(self, headers: Mapping[str, str], parsed: Any | None) -> float | None:
        """Retry-After, else the RetryInfo `retryDelay` ("37s") of the error's details."""
        waited = header_retry_after(headers, self._clock())
        if waited is not None or parsed is None:
            return waited
        delay = first_text(parsed, _RETRY_DELAY_PATH)
        return parse_duration(delay) if delay is not None else None

    def error_json(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        """{"error": {"code", "message", "status"}} with RetryInfo when a wait is known."""
        default = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _GATEWAY_STATUSES.get(status, default),
        }
        if retry_after is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": _google_duration(retry_after),
                }
            ]
        return {"error": error}
