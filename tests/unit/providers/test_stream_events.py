"""In-band errors inside a 200 stream are classified; ordinary chunks are not."""

from __future__ import annotations

import pytest

from llmgateway.core.constants import ErrorReason, ProviderType
from tests.fixtures.provider_errors import STREAM_ERRORS, STREAM_OK_CHUNKS
from tests.unit.providers.factory import make_adapter

CASES = [
    pytest.param(provider, name, id=f"{provider}-{name}")
    for provider, events in STREAM_ERRORS.items()
    for name in events
]


@pytest.mark.parametrize(("provider", "name"), CASES)
def test_error_events_are_classified(provider: str, name: str) -> None:
    """Anthropic `event: error`, an OpenAI `error` chunk and a Gemini `error` chunk get a reason."""
    chunk, expected = STREAM_ERRORS[provider][name]
    result = make_adapter(provider).classify_stream_event(chunk)
    assert result is not None
    assert result.reason == ErrorReason(expected)
    assert result.status_code == 200
    assert result.message.startswith("stream error: ")


@pytest.mark.parametrize("provider", list(ProviderType))
def test_ordinary_chunks_mentioning_error_are_not_errors(provider: ProviderType) -> None:
    """A content delta whose text says "error" is passed over."""
    assert make_adapter(provider).classify_stream_event(STREAM_OK_CHUNKS[provider]) is None


@pytest.mark.parametrize("provider", list(ProviderType))
@pytest.mark.parametrize(
    "chunk",
    [
        b"",
        b"data: [DONE]\n\n",
        b'data: {"error": {"mess',
        b"event: error\n",
        b"\xff error \xfe",
        b": ping error\n\n",
    ],
)
def test_partial_or_garbage_chunks_never_raise(provider: ProviderType, chunk: bytes) -> None:
    """Cut, empty or non-JSON chunks give None rather than an exception."""
    assert make_adapter(provider).classify_stream_event(chunk) is None


def test_an_error_after_normal_events_in_one_chunk_is_found() -> None:
    """A chunk holding several events is scanned to the error event."""
    ok = STREAM_OK_CHUNKS["anthropic"]
    error, _ = STREAM_ERRORS["anthropic"]["overloaded"]
    result = make_adapter("anthropic").classify_stream_event(ok + error)
    assert result is not None and result.reason is ErrorReason.OVERLOADED


def test_openai_compatible_in_band_rate_limit_keeps_its_meaning() -> None:
    """An OpenAI-style chunk error with a rate-limit code classifies as rate_limited."""
    chunk = b'data: {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}\n\n'
    result = make_adapter("openai_like").classify_stream_event(chunk)
    assert result is not None and result.reason is ErrorReason.RATE_LIMITED


def test_gemini_json_array_stream_error_is_found() -> None:
    """Gemini streaming without alt=sse sends a JSON array; an error element is classified."""
    chunk = b'[{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}]'
    result = make_adapter("gemini").classify_stream_event(chunk)
    assert result is not None and result.reason is ErrorReason.RATE_LIMITED


def test_anthropic_does_not_treat_an_error_field_of_a_normal_event_as_error() -> None:
    """Only {"type": "error"} events are errors for Anthropic."""
    chunk = b'event: message_delta\ndata: {"type": "message_delta", "error": {"type": "x"}}\n\n'
    assert make_adapter("anthropic").classify_stream_event(chunk) is None
