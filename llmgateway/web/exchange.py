"""The values one proxied request is made of: its instance's route and its state.

`Route` is built once per instance at start-up; `Exchange` is the mutable
state of one client request (for logs, metrics and the point of no return).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Protocol

from aiohttp import web

from llmgateway.config.schemas import ProviderConfig, RetryBudget
from llmgateway.core.constants import ALL_MODELS_MARKER, ErrorReason, ProviderType, StreamingMode
from llmgateway.providers import build_adapter
from llmgateway.providers.base import ProviderAdapter
from llmgateway.providers.upstream import CallLimits

MAX_RELAYED_ERROR_BODY: Final = 1024 * 1024
"""An upstream error body is returned as is up to this size; a larger one becomes a 502."""


class RequestObserver(Protocol):
    """Receives what the request path measures (implemented by the metrics)."""

    def request_done(
        self, instance: str, status: int, seconds: float, upstream_seconds: float
    ) -> None:
        """One client request ended with `status`; total and upstream wall time."""

    def attempt_failed(self, instance: str, reason: ErrorReason) -> None:
        """One upstream attempt failed with `reason` (a retry may follow)."""


@dataclass(frozen=True, slots=True)
class Route:
    """Everything the request path needs of one instance, built at start-up."""

    config: ProviderConfig
    adapter: ProviderAdapter
    base_url: str
    streaming: bool
    configured_models: frozenset[str]
    key_retry: RetryBudget
    server_retry: RetryBudget
    retry_enabled: bool
    limits: CallLimits

    def status_model(self, model: str) -> str:
        """The status model a request for `model` picks its key under (see the accessor's)."""
        if self.config.shared_key_status:
            return ALL_MODELS_MARKER
        return model if model in self.configured_models else self.config.default_model

    @classmethod
    def of(cls, config: ProviderConfig, adapter: ProviderAdapter) -> Route:
        """The route of the instance `config`, served through `adapter`."""
        policy = config.gateway_policy
        return cls(
            config=config,
            adapter=adapter,
            base_url=config.api_base_url.rstrip("/"),
            streaming=policy.streaming_mode is StreamingMode.AUTO,
            configured_models=frozenset(config.models),
            key_retry=policy.retry.on_key_error,
            server_retry=policy.retry.on_server_error,
            retry_enabled=policy.retry.enabled,
            limits=CallLimits.for_relay(config.timeouts, MAX_RELAYED_ERROR_BODY),
        )


def shape_adapter(provider_type: ProviderType) -> ProviderAdapter:
    """An adapter used only for error shapes when no instance is known."""
    return build_adapter(
        ProviderConfig(
            name="_", provider_type=provider_type, api_base_url="http://invalid", default_model=""
        )
    )


@dataclass(slots=True)
class Exchange:
    """The mutable state of one client request, for logs and metrics."""

    request_id: str
    started: float
    instance: str = "-"
    model: str = ""
    attempts: int = 0
    keys: list[str] = field(default_factory=list)
    upstream_seconds: float = 0.0
    status: int = 0
    body_read: bool = False
    """The client's body has arrived whole (a timeout before that is the client's: 408)."""
    prepared: web.StreamResponse | None = None
    """The client's response once its headers went out (the point of no return)."""
