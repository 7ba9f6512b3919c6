"""Model extraction for every request shape; never raises."""

from __future__ import annotations

import orjson
import pytest

from tests.unit.providers.factory import make_adapter

JSON_BODY_CASES = [
    pytest.param(b'{"model": "gpt-4o-mini", "messages": []}', "gpt-4o-mini", id="model-first"),
    pytest.param(
        b'{"messages": [{"role": "user", "content": "hi"}], "model": "claude-3-5-haiku-latest",'
        b' "max_tokens": 5, "stream": true}',
        "claude-3-5-haiku-latest",
        id="model-after-messages-streaming",
    ),
    pytest.param(
        orjson.dumps(
            {
                "messages": [{"role": "user", "content": '{"model": "decoy"}'}],
                "tools": [{"type": "function", "function": {"parameters": {"model": "nested"}}}],
                "model": "real",
            }
        ),
        "real",
        id="decoys-in-content-and-nested-objects",
    ),
    pytest.param(
        b'{"input": "text", "model": "text-embedding-3-small"}',
        "text-embedding-3-small",
        id="embeddings",
    ),
    pytest.param(b"", "", id="no-body"),
    pytest.param(b'{"messages": []}', "", id="no-model"),
    pytest.param(b'{"model": "gpt-4o", "messages": [', "", id="truncated-json"),
    pytest.param(b"model=gpt-4o", "", id="form-encoded"),
    pytest.param(b'{"model": 42}', "", id="model-not-a-string"),
    pytest.param(b'{"model": null}', "", id="model-null"),
    pytest.param(b'[{"model": "gpt-4o"}]', "", id="json-array"),
    pytest.param(b'"model"', "", id="json-string"),
    pytest.param(b'\xff\xfe\x00\x01 "model"', "", id="binary"),
]


@pytest.mark.parametrize("provider", ["openai_like", "anthropic"])
@pytest.mark.parametrize(("body", "expected"), JSON_BODY_CASES)
def test_json_body_model(provider: str, body: bytes, expected: str) -> None:
    """The top-level string `model` of the JSON body, else ""."""
    assert make_adapter(provider).extract_model("/v1/chat/completions", body) == expected


GEMINI_CASES = [
    ("/v1beta/models/gemini-2.0-flash:generateContent", "gemini-2.0-flash"),
    ("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", "gemini-2.0-flash"),
    ("/v1beta/models/gemini-1.5-pro-002:countTokens", "gemini-1.5-pro-002"),
    ("/v1beta/models/text-embedding-004:embedContent", "text-embedding-004"),
    ("/v1beta/models/text-embedding-004:batchEmbedContents", "text-embedding-004"),
    ("/v1/models/gemini-2.5-pro:generateContent", "gemini-2.5-pro"),
    ("/prefix/v1beta/models/gemini-2.0-flash:generateContent", "gemini-2.0-flash"),
    ("/v1beta/models/gemini%2D2.0-flash:generateContent", "gemini-2.0-flash"),
    ("/v1beta/models/gemini-2.0-flash", ""),
    ("/v1beta/models", ""),
    ("/v1beta/models?pageToken=/models/x:generateContent", ""),
    ("/v1beta/tunedModels/my-tuned:generateContent", ""),
    ("/v1beta/files", ""),
    ("", ""),
]


@pytest.mark.parametrize(("path", "expected"), GEMINI_CASES)
def test_gemini_model_from_path(path: str, expected: str) -> None:
    """Gemini reads `models/{model}:method` from the path; the body is ignored."""
    body = b'{"model": "ignored", "contents": []}'
    assert make_adapter("gemini").extract_model(path, body) == expected
