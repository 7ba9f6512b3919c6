"""ConfigAccessor: the only way application code reads the configuration.

It owns the loaded `AppConfig`: services receive the accessor (or what it
hands out) instead of loading or walking the configuration themselves.
"""

from __future__ import annotations

from typing import final

from llmgateway.config.schemas import (
    AppConfig,
    DatabaseConfig,
    KeeperConfig,
    LoggingConfig,
    ProviderConfig,
    ServerConfig,
)
from llmgateway.core.constants import ALL_MODELS_MARKER


@final
class ConfigAccessor:
    """Read-only access to a validated configuration.

    Built once from an `AppConfig`. The request path resolves tokens in the
    gateway's own table, built from `enabled_providers()` at start-up.
    """

    __slots__ = ("_config", "_enabled")

    def __init__(self, config: AppConfig) -> None:
        self._config = config
        self._enabled: tuple[ProviderConfig, ...] = tuple(
            p for p in config.providers.values() if p.enabled
        )

    @property
    def server(self) -> ServerConfig:
        """The `server` section."""
        return self._config.server

    @property
    def database(self) -> DatabaseConfig:
        """The `database` section."""
        return self._config.database

    @property
    def keeper(self) -> KeeperConfig:
        """The `keeper` section."""
        return self._config.keeper

    @property
    def logging(self) -> LoggingConfig:
        """The `logging` section."""
        return self._config.logging

    @property
    def deprecations(self) -> tuple[str, ...]:
        """What the file says in a deprecated way (one warning each, to show or log)."""
        return self._config.deprecations

    def providers(self) -> tuple[ProviderConfig, ...]:
        """Every configured provider instance, enabled or not, in file order."""
        return tuple(self._config.providers.values())

    def enabled_providers(self) -> tuple[ProviderConfig, ...]:
        """The enabled provider instances, in file order."""
        return self._enabled

    def get_provider(self, name: str) -> ProviderConfig | None:
        """The provider instance called `name`, or None."""
        return self._config.providers.get(name)

    def secrets(self) -> frozenset[str]:
        """Every key and token written in the configuration (for log masking)."""
        found: set[str] = set()
        if self._config.server.admin_token:
            found.add(self._config.server.admin_token)
        for p in self._config.providers.values():
            found.update(k for k in p.keys if k)
            if p.access_control.gateway_access_token:
                found.add(p.access_control.gateway_access_token)
        return frozenset(found)

    @staticmethod
    def status_models(provider: ProviderConfig) -> tuple[str, ...]:
        """The model names under which the instance's key statuses are kept.

        One `__ALL_MODELS__` entry when keys share one status, else every
        configured model.
        """
        if provider.shared_key_status:
            return (ALL_MODELS_MARKER,)
        return tuple(provider.models)
