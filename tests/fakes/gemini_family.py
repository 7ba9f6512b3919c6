"""The Gemini API as the fake upstream speaks it.

`POST …/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`
(`data: …\\r\\n\\r\\n` frames) and `:countTokens`; auth by `x-goog-api-key` or
the `key` query parameter; google.rpc error bodies.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, final

from multidict import CIMultiDictProxy, MultiMapping

from llmgateway.core.constants import ProviderType
from tests.fakes.family import (
    Behaviour,
    Call,
    Operation,
    Reply,
    dump,
    load_object,
    replace_text,
    reply_pieces,
    request_id,
    seconds_text,
)
from tests.fixtures.provider_errors import GEMINI_ERRORS, STREAM_ERRORS, UpstreamError

GEMINI_PATH: Final = re.compile(r"/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")
"""`models/{model}:{method}` at the end of a Gemini URL path."""

_METHODS: Final = ("generateContent", "streamGenerateContent", "countTokens")
"""The methods the fake serves; any other answers Gemini's 404 NOT_FOUND."""

LISTED_MODELS: Final = ("gemini-2.0-flash", "gemini-1.5-pro")
"""What `GET /v1beta/models` lists."""

_ERROR_FIXTURE: Final = {
    Behaviour.INVALID_KEY: "invalid_key",
    Behaviour.NO_QUOTA: "quota_per_day",
    Behaviour.RATE_LIMITED: "quota_per_minute",
    Behaviour.NO_MODEL: "model_not_found",
    Behaviour.NO_ACCESS: "permission_denied",
    Behaviour.SERVER_ERROR: "internal",
    Behaviour.OVERLOADED: "unavailable",
    Behaviour.BAD_REQUEST: "bad_request",
}


def _error(status: int, message: str, grpc_status: str) -> Reply:
    return Reply.json(
        status, {"error": {"code": status, "message": message, "status": grpc_status}}
    )


def _with_retry_delay(error: UpstreamError, retry_after: float) -> UpstreamError:
    """The fixture with its RetryInfo.retryDelay set to `retry_after`."""
    body = json.loads(error.body)
    for detail in body["error"].get("details", []):
        if detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            detail["retryDelay"] = seconds_text(retry_after)
    return UpstreamError(error.status, dict(error.headers), json.dumps(body).encode())


def is_gemini(path: str) -> bool:
    """True when a request is meant for the Gemini API."""
    return GEMINI_PATH.search(path) is not None or "/v1beta/" in path


@final
class GeminiFamily:
    """Gemini generateContent, streamGenerateContent and countTokens."""

    provider_type = ProviderType.GEMINI
    stream_content_type = "text/event-stream"

    def key_of(self, headers: CIMultiDictProxy[str], query: MultiMapping[str]) -> str | None:
        """The `x-goog-api-key` header, else the `key` query parameter."""
        return headers.get("x-goog-api-key") or query.get("key") or None

    def parse(
        self, method: str, path: str, query: MultiMapping[str], body: bytes, chunk_count: int
    ) -> Call:
        """The model and method from the URL path, or the model list; anything else is unknown."""
        match = GEMINI_PATH.search(path) if method == "POST" else None
        model = match["model"] if match else ""
        stream = bool(match and match["method"] == "streamGenerateContent")
        operation = Operation.UNKNOWN
        if match and match["method"] in _METHODS:
            is_count = match["method"] == "countTokens"
            operation = Operation.COUNT_TOKENS if is_count else Operation.GENERATE
        elif method == "GET" and path.rstrip("/").endswith(("/v1beta/models", "/v1/models")):
            operation = Operation.LIST_MODELS
        return Call(
            family=self.provider_type,
            operation=operation,
            model=model,
            stream=stream,
            payload=load_object(body),
            body_size=len(body),
            pieces=reply_pieces(model, chunk_count),
        )

    def error(self, behaviour: Behaviour, call: Call, retry_after: float) -> Reply:
        """The google.rpc error; rate limits carry QuotaFailure and RetryInfo."""
        if behaviour is Behaviour.UNAVAILABLE:
            return _error(503, "The service is currently unavailable.", "UNAVAILABLE")
        fixture = GEMINI_ERRORS[_ERROR_FIXTURE[behaviour]]
        if behaviour is Behaviour.NO_MODEL and call.model:
            fixture = replace_text(fixture, "gemini-9.0-ultra", call.model)
        if behaviour is Behaviour.RATE_LIMITED:
            fixture = _with_retry_delay(fixture, retry_after)
        return Reply.of(fixture)

    def missing_key(self) -> Reply:
        """403 "Method doesn't allow unregistered callers"."""
        return _error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity)."
            " Please use API Key or other form of API consumer identity to call this API.",
            "PERMISSION_DENIED",
        )

    def not_found(self, method: str, path: str) -> Reply:
        """404 NOT_FOUND, worded as Gemini words it for a method it does not have."""
        return _error(404, "Requested entity was not found.", "NOT_FOUND")

    def extra_headers(self) -> dict[str, str]:
        """Gemini sets no request id; it says which server answered."""
        return {"Server": "scaffolding on HTTPServer2", "Vary": "Origin, X-Origin, Referer"}

    def success(self, call: Call) -> Reply:
        """A GenerateContentResponse or a token count."""
        if call.operation is Operation.COUNT_TOKENS:
            return Reply.json(200, {"totalTokens": call.prompt_tokens})
        if call.operation is Operation.LIST_MODELS:
            listed = [
                {
                    "name": f"models/{m}",
                    "displayName": m,
                    "supportedGenerationMethods": list(_METHODS),
                }
                for m in LISTED_MODELS
            ]
            return Reply.json(200, {"models": listed})
        return Reply.json(200, self._response(call, call.text, final=True))

    def stream(self, call: Call) -> list[bytes]:
        """One GenerateContentResponse per piece; the last one finishes with usage."""
        last = len(call.pieces) - 1
        return [
            b"data: " + dump(self._response(call, piece, final=i == last)) + b"\r\n\r\n"
            for i, piece in enumerate(call.pieces)
        ]

    def stream_error(self) -> bytes:
        """`data: {"error": {... UNAVAILABLE ...}}`."""
        return STREAM_ERRORS["gemini"]["unavailable"][0]

    def _response(self, call: Call, text: str, *, final: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
        if final:
            candidate["finishReason"] = "STOP"
        candidate["index"] = 0
        output = len(call.pieces) if final else 1
        usage = {
            "promptTokenCount": call.prompt_tokens,
            "candidatesTokenCount": output,
            "totalTokenCount": call.prompt_tokens + output,
        }
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": call.model,
            "responseId": request_id("")[:22],
        }
