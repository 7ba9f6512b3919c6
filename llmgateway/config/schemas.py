"""Frozen dataclasses for every section of `config/providers.yaml`.

The loader builds these from the merged YAML; application code reads them only
through `llmgateway.core.accessor.ConfigAccessor`. Durations are float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmgateway.core.constants import ErrorReason, ProviderType, StreamingMode


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The HTTP listener and its admin guard."""

    host: str = "0.0.0.0"
    port: int = 55300
    admin_token: str = ""
    max_body_mb: float = 32
    max_event_subscribers: int = 100
    auth_failures_per_minute: int = 60
    workers: int = 1
    shutdown_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where key statuses are stored: `sqlite:///path` or `postgresql://...`."""

    url: str = "sqlite:///data/llmgateway.db"
    pool_min_size: int = 1
    pool_max_size: int = 10


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """The keeper: background probing of every key."""

    enabled: bool = True
    max_concurrent_probes: int = 10
    max_concurrent_probes_per_instance: int = 5
    keys_sync_interval: float = 60.0
    check_interval: float = 5.0
    shutdown_timeout: float = 10.0
    confirm_within: float = 30.0
    server_error_cooldown: float = 30.0
    incident_window: float = 10.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Log level, format and the periodic pool summary."""

    level: str = "info"
    format: str = "console"
    summary_interval: float = 1800.0
    access_log: bool = True


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One configured model: optional probe overrides."""

    probe_path: str | None = None
    test_payload: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AccessControl:
    """How clients authenticate to this provider instance."""

    gateway_access_token: str = ""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream timeouts in seconds; `total` bounds the whole exchange incl. retries."""

    connect: float = 5.0
    first_byte: float = 60.0
    idle: float = 120.0
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """How long until a key is checked again after each kind of outcome (seconds)."""

    on_success: float = 86400.0
    on_rate_limit: float = 3600.0
    on_no_quota: float = 21600.0
    on_server_error: float = 1800.0
    on_overload: float = 1800.0
    on_invalid_key: float = 864000.0
    on_no_access: float = 864000.0
    on_no_model: float = 864000.0
    on_other_error: float = 3600.0
    quarantine_after: float = 2592000.0
    quarantine_recheck: float = 864000.0
    stop_checking_after: float = 7776000.0
    verification_attempts: int = 3
    verification_delay: float = 65.0


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """One user rule: a status code plus a regex on a JSON path of the error body."""

    status_code: int
    error_path: str
    match_pattern: str
    map_to: ErrorReason
    priority: int = 0
    description: str = ""


@dataclass(frozen=True, slots=True)
class ErrorParsing:
    """User error-classification rules, applied before the built-in defaults."""

    enabled: bool = True
    rules: tuple[ErrorRule, ...] = ()


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How many attempts a class of failure gets, and the backoff between them."""

    attempts: int = 3
    backoff: float = 0.1
    backoff_factor: float = 1.5


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry budgets of the gateway, one per failure class."""

    enabled: bool = True
    on_key_error: RetryBudget = field(default_factory=RetryBudget)
    on_server_error: RetryBudget = field(
        default_factory=lambda: RetryBudget(attempts=2, backoff=0.5, backoff_factor=2.0)
    )


@dataclass(frozen=True, slots=True)
class GatewayPolicy:
    """How the gateway streams, classifies and retries for one instance."""

    streaming_mode: StreamingMode = StreamingMode.AUTO
    fast_status_mapping: dict[int, ErrorReason] = field(default_factory=dict)
    error_parsing: ErrorParsing = field(default_factory=ErrorParsing)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate_limit_cooldown: float = 60.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One provider instance: an API family, an upstream, keys, models and policies."""

    name: str
    provider_type: ProviderType
    api_base_url: str
    default_model: str
    enabled: bool = True
    keys_path: str = ""
    keys: tuple[str, ...] = ()
    shared_key_status: bool = False
    models: dict[str, ModelConfig] = field(default_factory=dict)
    access_control: AccessControl = field(default_factory=AccessControl)
    timeouts: Timeouts = field(default_factory=Timeouts)
    health_policy: HealthPolicy = field(default_factory=HealthPolicy)
    gateway_policy: GatewayPolicy = field(default_factory=GatewayPolicy)


@dataclass(frozen=True, slots=True)
class AppConfig:
    """The whole configuration file."""

    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
