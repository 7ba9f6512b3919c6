"""The Anthropic Messages API as the fake upstream speaks it.

`POST …/v1/messages` (streaming with the real `event:` sequence),
`POST …/v1/messages/count_tokens`, `GET …/v1/models`; `x-api-key` (or Bearer) auth;
Anthropic's `{"type": "error", ...}` bodies with a `request-id` header.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any, Final, final

from multidict import CIMultiDictProxy, MultiMapping

from llmgateway.core.constants import ProviderType
from tests.fakes.family import (
    Behaviour,
    Call,
    Operation,
    Reply,
    Route,
    dump,
    json_body_call,
    replace_text,
    request_id,
)
from tests.fixtures.provider_errors import ANTHROPIC_ERRORS, STREAM_ERRORS

MODELS: Final = ("claude-3-5-haiku-latest", "claude-sonnet-4-5")
"""Models listed by `GET /v1/models` (any model name is served)."""

_ERROR_FIXTURE: Final = {
    Behaviour.INVALID_KEY: "invalid_key",
    Behaviour.NO_QUOTA: "credit_balance",
    Behaviour.RATE_LIMITED: "rate_limited",
    Behaviour.NO_MODEL: "model_not_found",
    Behaviour.NO_ACCESS: "permission",
    Behaviour.SERVER_ERROR: "api_error",
    Behaviour.OVERLOADED: "overloaded",
    Behaviour.BAD_REQUEST: "bad_request",
}


def _error(status: int, type_: str, message: str) -> Reply:
    body = {"type": "error", "error": {"type": type_, "message": message}}
    return Reply.json(status, body | {"request_id": request_id("req_")})


_ROUTES: Final[tuple[Route, ...]] = (
    ("POST", "/messages", Operation.MESSAGES),
    ("POST", "/messages/count_tokens", Operation.COUNT_TOKENS),
    ("GET", "/models", Operation.LIST_MODELS),
)


@final
class AnthropicFamily:
    """Anthropic messages, token counting and model listing."""

    provider_type = ProviderType.ANTHROPIC
    stream_content_type = "text/event-stream; charset=utf-8"

    def key_of(self, headers: CIMultiDictProxy[str], query: MultiMapping[str]) -> str | None:
        """The `x-api-key` header, else a Bearer token (newer SDKs send `Authorization`)."""
        if key := headers.get("x-api-key"):
            return key
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def parse(
        self, method: str, path: str, query: MultiMapping[str], body: bytes, chunk_count: int
    ) -> Call:
        """Messages, count_tokens or the model list; anything else is unknown."""
        return json_body_call(self.provider_type, _ROUTES, method, path, body, chunk_count)

    def error(self, behaviour: Behaviour, call: Call, retry_after: float) -> Reply:
        """Anthropic's error body and status; rate limits carry retry-after and reset headers."""
        if behaviour is Behaviour.UNAVAILABLE:
            return _error(503, "api_error", "Service Unavailable")
        fixture = ANTHROPIC_ERRORS[_ERROR_FIXTURE[behaviour]]
        if behaviour is Behaviour.NO_MODEL and call.model:
            fixture = replace_text(fixture, "claude-3-opus-2099", call.model)
        if behaviour is Behaviour.RATE_LIMITED:
            reset = datetime.fromtimestamp(time.time() + retry_after, UTC)
            return Reply.of(
                fixture,
                **{
                    "retry-after": str(math.ceil(retry_after)),
                    "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            )
        return Reply.of(fixture)

    def missing_key(self) -> Reply:
        """401 "x-api-key header is required"."""
        return _error(401, "authentication_error", "x-api-key header is required")

    def not_found(self, method: str, path: str) -> Reply:
        """404 not_found_error."""
        return _error(404, "not_found_error", "Not Found")

    def extra_headers(self) -> dict[str, str]:
        """The request id Anthropic sets on every answer."""
        return {"request-id": request_id("req_"), "anthropic-organization-id": "org-fake"}

    def success(self, call: Call) -> Reply:
        """A message, a token count or the model list."""
        match call.operation:
            case Operation.COUNT_TOKENS:
                return Reply.json(200, {"input_tokens": call.prompt_tokens})
            case Operation.LIST_MODELS:
                data = [
                    {
                        "type": "model",
                        "id": m,
                        "display_name": m,
                        "created_at": "2025-01-01T00:00:00Z",
                    }
                    for m in MODELS
                ]
                page = {"data": data, "has_more": False, "first_id": MODELS[0]}
                return Reply.json(200, page | {"last_id": MODELS[-1]})
            case _:
                message = self._message(call, [{"type": "text", "text": call.text}])
                message["stop_reason"] = "end_turn"
                message["usage"]["output_tokens"] = len(call.pieces)
                return Reply.json(200, message)

    def stream(self, call: Call) -> list[bytes]:
        """message_start, content_block_start, ping, deltas, block stop, message_delta, stop."""
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": self._message(call, [])}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ("ping", {"type": "ping"}),
        ]
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
            for piece in call.pieces
        ]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(call.pieces)},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return [f"event: {name}\ndata: ".encode() + dump(data) + b"\n\n" for name, data in events]

    def stream_error(self) -> bytes:
        """`event: error` with an overloaded_error."""
        return STREAM_ERRORS["anthropic"]["overloaded"][0]

    def _message(self, call: Call, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": request_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": call.prompt_tokens, "output_tokens": 1},
        }


def is_anthropic(method: str, path: str, headers: CIMultiDictProxy[str]) -> bool:
    """True when a request is meant for the Anthropic API.

    `/v1/models` is shared with OpenAI: Anthropic clients send `x-api-key`
    and `anthropic-version`.
    """
    if path.endswith(("/messages", "/messages/count_tokens")):
        return True
    if path.endswith(("/chat/completions", "/embeddings")):
        return False
    return "anthropic-version" in headers or "x-api-key" in headers
