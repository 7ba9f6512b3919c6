"""The OpenAI-compatible API as the fake upstream speaks it.

`POST …/v1/chat/completions` (streaming with `data: …` chunks and `data: [DONE]`),
`POST …/v1/embeddings`, `GET …/v1/models`; Bearer auth; OpenAI's error bodies.
"""

from __future__ import annotations

import base64
import math
import struct
import time
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
    seconds_text,
)
from tests.fixtures.provider_errors import OPENAI_ERRORS, STREAM_ERRORS

MODELS: Final = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
"""Models listed by `GET /v1/models` (any model name is served)."""

EMBEDDING_SIZE: Final = 8

_ERROR_FIXTURE: Final = {
    Behaviour.INVALID_KEY: "invalid_key",
    Behaviour.NO_QUOTA: "insufficient_quota",
    Behaviour.RATE_LIMITED: "rate_limited_requests",
    Behaviour.NO_MODEL: "model_not_found",
    Behaviour.NO_ACCESS: "unsupported_country",
    Behaviour.SERVER_ERROR: "server_error",
    Behaviour.UNAVAILABLE: "service_unavailable",
    Behaviour.OVERLOADED: "service_unavailable",
    Behaviour.BAD_REQUEST: "context_length",
}


_ROUTES: Final[tuple[Route, ...]] = (
    ("POST", "/chat/completions", Operation.CHAT),
    ("POST", "/embeddings", Operation.EMBEDDINGS),
    ("GET", "/models", Operation.LIST_MODELS),
)


@final
class OpenAIFamily:
    """OpenAI-compatible chat completions, embeddings and model listing."""

    provider_type = ProviderType.OPENAI_LIKE
    stream_content_type = "text/event-stream; charset=utf-8"

    def key_of(self, headers: CIMultiDictProxy[str], query: MultiMapping[str]) -> str | None:
        """The Bearer token of the Authorization header."""
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def parse(
        self, method: str, path: str, query: MultiMapping[str], body: bytes, chunk_count: int
    ) -> Call:
        """Chat completions, embeddings or the model list; anything else is unknown."""
        return json_body_call(self.provider_type, _ROUTES, method, path, body, chunk_count)

    def error(self, behaviour: Behaviour, call: Call, retry_after: float) -> Reply:
        """OpenAI's error body and status; rate limits carry the reset headers."""
        fixture = OPENAI_ERRORS[_ERROR_FIXTURE[behaviour]]
        if behaviour is Behaviour.NO_MODEL and call.model:
            fixture = replace_text(fixture, "gpt-5-turbo", call.model)
        if behaviour is Behaviour.RATE_LIMITED:
            return Reply.of(
                fixture,
                **{
                    "Retry-After": str(math.ceil(retry_after)),
                    "x-ratelimit-reset-requests": seconds_text(retry_after),
                },
            )
        return Reply.of(fixture)

    def missing_key(self) -> Reply:
        """401 "You didn't provide an API key"."""
        return Reply.of(OPENAI_ERRORS["missing_key"])

    def not_found(self, method: str, path: str) -> Reply:
        """404 "Invalid URL"."""
        error = {
            "message": f"Invalid URL ({method} {path})",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        return Reply.json(404, {"error": error})

    def extra_headers(self) -> dict[str, str]:
        """The request id OpenAI sets on every answer."""
        return {"x-request-id": request_id("req_"), "openai-processing-ms": "42"}

    def success(self, call: Call) -> Reply:
        """A chat.completion, an embedding list or the model list."""
        match call.operation:
            case Operation.EMBEDDINGS:
                return Reply.json(200, self._embeddings(call))
            case Operation.LIST_MODELS:
                data = [
                    {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"}
                    for m in MODELS
                ]
                return Reply.json(200, {"object": "list", "data": data})
            case _:
                return Reply.json(200, self._completion(call))

    def stream(self, call: Call) -> list[bytes]:
        """Role chunk, one content chunk per piece, finish chunk, usage chunk, [DONE]."""
        ident, created = request_id("chatcmpl-"), int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": call.model,
                "system_fingerprint": "fp_fake",
                "choices": [choice],
            }

        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        chunks += [chunk({"content": piece}) for piece in call.pieces]
        chunks.append(chunk({}, "stop"))
        options = call.payload.get("stream_options") if call.payload else None
        if isinstance(options, dict) and options.get("include_usage"):
            usage_chunk = chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._usage(call)
            chunks.append(usage_chunk)
        return [b"data: " + dump(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]

    def stream_error(self) -> bytes:
        """`data: {"error": {... server_error ...}}`."""
        return STREAM_ERRORS["openai_like"]["server_error"][0]

    def _usage(self, call: Call) -> dict[str, int]:
        completion = len(call.pieces)
        return {
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": call.prompt_tokens + completion,
        }

    def _completion(self, call: Call) -> dict[str, Any]:
        message = {"role": "assistant", "content": call.text, "refusal": None}
        return {
            "id": request_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": self._usage(call),
        }

    def _embeddings(self, call: Call) -> dict[str, Any]:
        raw = call.payload.get("input", "") if call.payload else ""
        inputs = raw if isinstance(raw, list) else [raw]
        as_base64 = bool(call.payload and call.payload.get("encoding_format") == "base64")
        vector = [round(0.1 * (i + 1), 3) for i in range(EMBEDDING_SIZE)]
        encoded: list[float] | str = (
            base64.b64encode(struct.pack(f"<{EMBEDDING_SIZE}f", *vector)).decode()
            if as_base64
            else vector
        )
        data = [
            {"object": "embedding", "index": i, "embedding": encoded} for i in range(len(inputs))
        ]
        usage = {"prompt_tokens": call.prompt_tokens, "total_tokens": call.prompt_tokens}
        return {"object": "list", "data": data, "model": call.model, "usage": usage}
