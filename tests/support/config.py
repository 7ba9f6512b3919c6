"""Configurations built in code for tests, read through the real `ConfigAccessor`."""

from __future__ import annotations

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.schemas import AppConfig, ProviderConfig


def accessor_of(*providers: ProviderConfig) -> ConfigAccessor:
    """The accessor of a configuration holding `providers` and every other option's default."""
    return ConfigAccessor(AppConfig(providers={p.name: p for p in providers}))
