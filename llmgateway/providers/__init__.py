"""Provider adapters: one per API family, built once per instance at start-up.

`build_adapter` picks the adapter of an instance's `provider_type`;
`family_for_path` tells the API family of a request when no instance is known
(to shape a 401 the client's SDK understands); `classify_exception` turns a
transport failure into a CheckResult.
"""

from __future__ import annotations

import re
import time
from typing import Final, assert_never

from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import ProviderType
from llmgateway.core.masking import Masker
from llmgateway.providers.anthropic import AnthropicAdapter
from llmgateway.providers.base import (
    CREDENTIAL_HEADERS,
    MAX_ERROR_BODY,
    ErrorBody,
    ProbeRequest,
    ProviderAdapter,
)
from llmgateway.providers.gemini import GeminiAdapter
from llmgateway.providers.http_adapter import HttpAdapter, strip_credentials
from llmgateway.providers.openai_like import OpenAILikeAdapter
from llmgateway.providers.retry_after import Clock
from llmgateway.providers.transport_errors import classify_exception, describe_exception

__all__ = [
    "CREDENTIAL_HEADERS",
    "MAX_ERROR_BODY",
    "AnthropicAdapter",
    "ErrorBody",
    "GeminiAdapter",
    "HttpAdapter",
    "OpenAILikeAdapter",
    "ProbeRequest",
    "ProviderAdapter",
    "build_adapter",
    "classify_exception",
    "describe_exception",
    "family_for_path",
    "strip_credentials",
]

_GEMINI_V1_METHOD: Final = re.compile(r"^/v1/models/[^/]+:")


def build_adapter(
    config: ProviderConfig, *, clock: Clock = time.time, masker: Masker | None = None
) -> ProviderAdapter:
    """The adapter of `config.provider_type`, its error rules compiled now.

    `config` is validated (its rules were checked when it was loaded). `clock` (Unix seconds) turns
    absolute reset times into waits. With `masker`, every message the adapter
    takes from an upstream answer is masked before it leaves the adapter, and
    every key is added to the masker before it is set on a request.
    """
    provider_type = ProviderType(config.provider_type)
    match provider_type:
        case ProviderType.OPENAI_LIKE:
            return OpenAILikeAdapter(config, clock=clock, masker=masker)
        case ProviderType.ANTHROPIC:
            return AnthropicAdapter(config, clock=clock, masker=masker)
        case ProviderType.GEMINI:
            return GeminiAdapter(config, clock=clock, masker=masker)
        case _:
            assert_never(provider_type)


def family_for_path(path: str) -> ProviderType:
    """The API family a request path belongs to, for errors when no instance is known.

    `/v1/messages…` is Anthropic, `/v1beta/…` or `/v1/models/…:…` Gemini,
    anything else OpenAI-compatible.
    """
    path = path.partition("?")[0]
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return ProviderType.ANTHROPIC
    if path.startswith(("/v1beta/", "/upload/v1beta/")) or _GEMINI_V1_METHOD.match(path):
        return ProviderType.GEMINI
    return ProviderType.OPENAI_LIKE
