"""build_adapter picks the type's adapter; family_for_path shapes errors with no instance."""

from __future__ import annotations

import pytest

from llmgateway.core.constants import ProviderType
from llmgateway.providers import (
    AnthropicAdapter,
    GeminiAdapter,
    OpenAILikeAdapter,
    build_adapter,
    family_for_path,
)
from tests.unit.providers.factory import make_config


@pytest.mark.parametrize(
    ("provider", "cls"),
    [
        (ProviderType.OPENAI_LIKE, OpenAILikeAdapter),
        (ProviderType.ANTHROPIC, AnthropicAdapter),
        (ProviderType.GEMINI, GeminiAdapter),
    ],
)
def test_build_adapter_matches_the_type(provider: ProviderType, cls: type) -> None:
    """Each provider_type gets its own adapter, which keeps the config."""
    config = make_config(provider)
    adapter = build_adapter(config)
    assert type(adapter) is cls
    assert adapter.provider_type is provider
    assert adapter.config is config


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("/v1/messages", ProviderType.ANTHROPIC),
        ("/v1/messages?beta=true", ProviderType.ANTHROPIC),
        ("/v1/messages/count_tokens", ProviderType.ANTHROPIC),
        ("/v1/messages/batches/msgbatch_1", ProviderType.ANTHROPIC),
        ("/v1beta/models/gemini-2.0-flash:generateContent", ProviderType.GEMINI),
        ("/v1beta/models", ProviderType.GEMINI),
        ("/v1/models/gemini-2.0-flash:streamGenerateContent?alt=sse", ProviderType.GEMINI),
        ("/upload/v1beta/files", ProviderType.GEMINI),
        ("/v1/chat/completions", ProviderType.OPENAI_LIKE),
        ("/v1/models", ProviderType.OPENAI_LIKE),
        ("/v1/models/gpt-4o", ProviderType.OPENAI_LIKE),
        ("/v1/messagesX", ProviderType.OPENAI_LIKE),
        ("/", ProviderType.OPENAI_LIKE),
        ("", ProviderType.OPENAI_LIKE),
    ],
)
def test_family_for_path(path: str, family: ProviderType) -> None:
    """Anthropic for /v1/messages…, Gemini for /v1beta/… and /v1/models/…:…, else OpenAI."""
    assert family_for_path(path) is family
