"""What the fake upstream knows in common about the three API families.

`Behaviour` is how a key misbehaves, `Call` a parsed request, `Reply` a whole
HTTP answer; `Family` is the interface each provider module implements.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from multidict import CIMultiDictProxy, MultiMapping

from llmgateway.core.constants import ProviderType
from tests.fixtures.provider_errors import UpstreamError


class Behaviour(StrEnum):
    """How the fake answers a request made with a given key (and model)."""

    OK = "ok"
    INVALID_KEY = "invalid_key"
    NO_QUOTA = "no_quota"
    RATE_LIMITED = "rate_limited"
    NO_MODEL = "no_model"
    NO_ACCESS = "no_access"
    SERVER_ERROR = "server_error"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    BAD_REQUEST = "bad_request"
    CUT_STREAM = "cut_stream"
    """Headers and part of the body are sent, then the TCP connection is aborted."""
    STREAM_ERROR_EVENT = "stream_error_event"
    """A 200 stream carrying an in-band error event after some chunks (non-streaming: OK)."""
    SLOW_FIRST_BYTE = "slow_first_byte"
    """Sleep `delay` seconds before answering OK."""
    HANG = "hang"
    """Never answer (until the client goes away or the fake closes)."""
    GARBAGE = "garbage"
    """Write bytes that are not HTTP on the raw transport, then close it."""


ERROR_BEHAVIOURS = frozenset(
    {
        Behaviour.INVALID_KEY,
        Behaviour.NO_QUOTA,
        Behaviour.RATE_LIMITED,
        Behaviour.NO_MODEL,
        Behaviour.NO_ACCESS,
        Behaviour.SERVER_ERROR,
        Behaviour.UNAVAILABLE,
        Behaviour.OVERLOADED,
        Behaviour.BAD_REQUEST,
    }
)
"""Behaviours answered with one provider error response (status, headers, body)."""


class Operation(StrEnum):
    """The endpoint a request reached."""

    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    LIST_MODELS = "list_models"
    MESSAGES = "messages"
    COUNT_TOKENS = "count_tokens"
    GENERATE = "generate"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the fake understood it."""

    family: ProviderType
    operation: Operation
    model: str
    stream: bool
    payload: dict[str, Any] | None
    """The JSON body; None when the body is absent or not a JSON object."""
    body_size: int
    pieces: tuple[str, ...]
    """The reply text, one piece per stream chunk (joined for a non-streaming reply)."""

    @property
    def text(self) -> str:
        """The whole reply text."""
        return "".join(self.pieces)

    @property
    def prompt_tokens(self) -> int:
        """A deterministic stand-in for the prompt's token count."""
        return max(1, self.body_size // 4)


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete HTTP answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def of(cls, error: UpstreamError, **extra_headers: str) -> Reply:
        """A reply from one of the shared provider error fixtures."""
        return cls(error.status, {**error.headers, **extra_headers}, error.body)

    @classmethod
    def json(cls, status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
        """A JSON reply."""
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, dump(payload))


class Family(Protocol):
    """One API family: its auth, its endpoints, its success and error shapes."""

    provider_type: ProviderType
    stream_content_type: str

    def key_of(self, headers: CIMultiDictProxy[str], query: MultiMapping[str]) -> str | None:
        """The API key the request carries, the provider's way, or None."""

    def parse(
        self, method: str, path: str, query: MultiMapping[str], body: bytes, chunk_count: int
    ) -> Call:
        """Understand a request (never raises; an unknown endpoint is Operation.UNKNOWN).

        `chunk_count` is how many pieces the reply text is split into.
        """

    def error(self, behaviour: Behaviour, call: Call, retry_after: float) -> Reply:
        """The provider's real error answer for an error behaviour."""

    def missing_key(self) -> Reply:
        """The provider's answer to a request without any key."""

    def not_found(self, method: str, path: str) -> Reply:
        """The provider's answer to an unknown endpoint."""

    def success(self, call: Call) -> Reply:
        """A realistic non-streaming success."""

    def stream(self, call: Call) -> list[bytes]:
        """The framed SSE events of a streaming success, terminator included."""

    def stream_error(self) -> bytes:
        """One framed in-band error event."""

    def extra_headers(self) -> dict[str, str]:
        """Headers the provider puts on every answer (request ids)."""


def dump(payload: object) -> bytes:
    """Compact JSON bytes, as the providers send them."""
    return json.dumps(payload, separators=(",", ":")).encode()


def load_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is empty, malformed or not an object."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


Route = tuple[str, str, "Operation"]
"""(method, path suffix, operation) of one endpoint of a JSON-body family."""


def json_body_call(
    family: ProviderType,
    routes: tuple[Route, ...],
    method: str,
    path: str,
    body: bytes,
    chunk_count: int,
) -> Call:
    """The call of a family whose model and `stream` flag are in the JSON body."""
    payload = load_object(body)
    model = str(payload.get("model", "")) if payload else ""
    operation = next(
        (op for verb, suffix, op in routes if method == verb and path.endswith(suffix)),
        Operation.UNKNOWN,
    )
    return Call(
        family=family,
        operation=operation,
        model=model,
        stream=bool(payload and payload.get("stream") is True),
        payload=payload,
        body_size=len(body),
        pieces=reply_pieces(model, chunk_count),
    )


def reply_pieces(model: str, chunk_count: int) -> tuple[str, ...]:
    """The deterministic reply text split into `chunk_count` pieces.

    The first piece is "hello from <model>", then " #1", " #2", ...: the
    joined text is the same streamed or not, so tests can check integrity.
    """
    return (f"hello from {model}", *(f" #{i}" for i in range(1, max(1, chunk_count))))


def request_id(prefix: str) -> str:
    """A fresh provider-style request id."""
    return f"{prefix}{uuid.uuid4().hex}"


def replace_text(error: UpstreamError, old: str, new: str) -> UpstreamError:
    """The fixture with `old` replaced by `new` in its body (e.g. the model name)."""
    body = error.body.replace(old.encode(), json.dumps(new)[1:-1].encode())
    return UpstreamError(error.status, dict(error.headers), body)


def seconds_text(seconds: float) -> str:
    """Seconds the way Google and OpenAI write durations: "7s", "2.5s"."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds:g}s"
