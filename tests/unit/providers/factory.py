"""Builds provider configs and adapters for the provider unit tests."""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from llmgateway.config.schemas import (
    ErrorParsing,
    ErrorRule,
    GatewayPolicy,
    ModelConfig,
    ProviderConfig,
)
from llmgateway.core.constants import ErrorReason, ProviderType
from llmgateway.providers import build_adapter
from llmgateway.providers.base import ProviderAdapter
from tests.fixtures.provider_errors import FIXED_NOW


def make_config(
    provider_type: ProviderType | str,
    *,
    rules: tuple[ErrorRule, ...] = (),
    parsing_enabled: bool = True,
    fast: dict[int, ErrorReason] | None = None,
    models: dict[str, ModelConfig] | None = None,
    **extra: Any,
) -> ProviderConfig:
    """A minimal valid ProviderConfig of `provider_type` with optional policies."""
    policy = GatewayPolicy(
        fast_status_mapping=dict(fast or {}),
        error_parsing=ErrorParsing(enabled=parsing_enabled, rules=rules),
    )
    return ProviderConfig(
        name="test-instance",
        provider_type=ProviderType(provider_type),
        api_base_url="http://127.0.0.1:1",
        default_model="default-model",
        models=dict(models or {}),
        gateway_policy=policy,
        **extra,
    )


def make_adapter(provider_type: ProviderType | str, **kwargs: Any) -> ProviderAdapter:
    """An adapter built by `build_adapter` with the fixtures' fixed clock."""
    return build_adapter(make_config(provider_type, **kwargs), clock=lambda: FIXED_NOW)


def headers_of(raw: dict[str, str] | None = None) -> CIMultiDictProxy[str]:
    """Response headers as aiohttp hands them to the adapter."""
    return CIMultiDictProxy(CIMultiDict(raw or {}))
