"""ConfigAccessor: the only way application code reads the configuration.

It owns the loaded `AppConfig`: services receive the accessor (or what it
hands out) instead of loading or walking the configuration themselves.
"""

from __future__ import annotations

from typing import final

from llmgateway.config.schemas import (
    AppConfig,
    DatabaseConfig,
    HealthPolicy,
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

    __slots__ = ("_config", "_enabled", "_served", "_routes")

    def __init__(self, config: AppConfig) -> None:
        self._config = config
        self._enabled: tuple[ProviderConfig, ...] = tuple(
            p for p in config.providers.values() if p.enabled
        )
        self._served: dict[str, ProviderConfig] = {p.name: p for p in self._enabled}
        self._routes: dict[str, tuple[bool, frozenset[str], str]] = {
            p.name: (p.shared_key_status, frozenset(p.models), p.default_model)
            for p in self._enabled
        }

    @property
    def config(self) -> AppConfig:
        """The whole validated configuration (what a reload compares with the file)."""
        return self._config

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

    def serves(self, name: str) -> bool:
        """True when the instance called `name` is enabled (served and probed here)."""
        return name in self._served

    def status_model(self, instance: str, model: str) -> str:
        """The status model under which a request of enabled `instance` for `model` is served.

        `__ALL_MODELS__` when its keys share one status, else `model` when it
        is configured, else the instance's `default_model`. Raises KeyError
        for an instance not enabled. On the request path: one dict look-up.
        """
        shared, models, default = self._routes[instance]
        if shared:
            return ALL_MODELS_MARKER
        return model if model in models else default

    def health_policy(self, instance: str) -> HealthPolicy:
        """The `health_policy` of enabled `instance` (KeyError for any other)."""
        return self._served[instance].health_policy

    def rate_limit_cooldown(self, instance: str) -> float:
        """Seconds a key of enabled `instance` cools down after a rate limit without Retry-After."""
        return self._served[instance].gateway_policy.rate_limit_cooldown

    def secrets(self) -> frozenset[str]:
        """Every key and token written in the configuration (for log masking)."""
        found: set[str] = set()
        if self._config.server.admin_token:
            found.add(self._config.server.admin_token)
        if self._config.database.encryption_key:
            found.add(self._config.database.encryption_key)
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
