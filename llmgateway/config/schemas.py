"""Frozen dataclasses for every section of `config/providers.yaml`, and every option's declaration.

Each option is declared once, on its field: default as a user writes it,
type, parser (a `Leaf`) and help text (see `llmgateway.config.options`). The
validator, the loader's defaults, `config create` and `config/example_full.yaml`
are derived from these declarations. The loader builds these dataclasses from
the merged YAML; application code reads them only through
`llmgateway.config.accessor.ConfigAccessor`. Durations are float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from llmgateway.config import fields as f
from llmgateway.config.options import (
    BOOL,
    COUNT,
    DELAY,
    DURATION,
    SECRET,
    STATUS_CODE,
    STRING,
    Leaf,
    declare,
    enum_of,
    mapping,
    one_of,
    option,
    section,
    sequence,
)
from llmgateway.core.constants import ErrorReason, ProviderType, StreamingMode
from llmgateway.core.key_material import ENCRYPTION_KEY_FORMS
from llmgateway.core.logs import LOG_FORMATS, LOG_LEVELS

REASON: Final = enum_of(ErrorReason)
MODEL_NAME: Final = Leaf(f.non_empty, "a model name")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The HTTP listener and its admin guard."""

    host: str = option("0.0.0.0", Leaf(f.non_empty, "a host name or IP address"), "listen address")
    port: int = option(55300, Leaf(f.integer(1, 65535), "an integer 1-65535"), "listen port")
    admin_token: str = option(
        "",
        SECRET,
        "guards /-/*, /metrics (at least 16 characters); empty: loopback clients only",
    )
    max_body_mb: float = option(
        32,
        Leaf(f.number(above=0.0), "a number of megabytes > 0"),
        "larger request bodies get 413",
    )
    max_event_subscribers: int = option(
        100, COUNT, "open /-/events streams at most; one more gets 503"
    )
    auth_failures_per_minute: int = option(
        60,
        Leaf(f.integer(minimum=0), "an integer >= 0 (0: never block an address)"),
        "wrong tokens per client address, then 429 for a minute (0: never)",
    )
    workers: int = option(1, COUNT, "worker processes sharing the port")
    shutdown_timeout: float = option("30s", DURATION, "grace period for in-flight requests on stop")


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where key statuses are stored: `sqlite:///path` or `postgresql://...`."""

    url: str = option(
        "sqlite:///data/llmgateway.db",
        Leaf(f.database_url, f.DATABASE_FORMS),
        "embedded SQLite file, or postgresql://user:password@host:5432/db",
    )
    pool_min_size: int = option(1, COUNT, "PostgreSQL connections kept open")
    pool_max_size: int = option(10, COUNT, "PostgreSQL connections at most")
    encryption_key: str = option(
        "",
        Leaf(f.encryption_key, f'"" or {ENCRYPTION_KEY_FORMS}', secret=True),
        "encrypts stored keys (32 random bytes, hex or base64: openssl rand -hex 32); "
        "empty: stored in clear",
    )


@dataclass(frozen=True, slots=True)
class KeeperConfig:
    """The keeper: background probing of every key."""

    enabled: bool = option(True, BOOL, "false: no background probing")
    max_concurrent_probes: int = option(10, COUNT, "probes in flight at once, all instances")
    max_concurrent_probes_per_instance: int = option(
        5, COUNT, "probes in flight at once, per instance"
    )
    keys_sync_interval: float = option("60s", DURATION, "re-read keys files")
    check_interval: float = option("5s", DURATION, "how often keys due for a check are looked for")
    shutdown_timeout: float = option("10s", DURATION, "wait for running probes on stop")
    confirm_within: float = option(
        "30s", DURATION, "a key error seen on traffic is probed within this"
    )
    server_error_cooldown: float = option(
        "30s", DURATION, "after 3 server errors in a row, traffic prefers other keys"
    )
    incident_window: float = option(
        "10s", DURATION, "many working keys failing alike within this: an incident"
    )


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Log level, format and the periodic pool summary."""

    level: str = option("info", one_of(LOG_LEVELS), " | ".join(LOG_LEVELS))
    format: str = option("console", one_of(LOG_FORMATS), " | ".join(LOG_FORMATS))
    summary_interval: float = option("30m", DURATION, "periodic pool summary line")
    access_log: bool = option(True, BOOL, "one line per proxied request")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One configured model: optional probe overrides."""

    probe_path: str | None = option(
        None,
        Leaf(f.optional(f.url_path), 'a path starting with "/"'),
        "probe request path (default per provider type)",
    )
    test_payload: dict[str, Any] | None = option(
        None,
        Leaf(f.optional(f.mapping), "a mapping (the JSON body)"),
        "probe request body (default: one output token)",
    )


@dataclass(frozen=True, slots=True)
class AccessControl:
    """How clients authenticate to this provider instance."""

    gateway_access_token: str = option(
        "", SECRET, "clients send this instead of a real key (at least 16 characters)"
    )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream timeouts in seconds; `total` bounds the whole exchange incl. retries."""

    connect: float = option("5s", DURATION, "TCP and TLS connection to the upstream")
    first_byte: float = option("60s", DURATION, "until upstream response headers")
    idle: float = option("120s", DURATION, "max gap between streamed chunks")
    total: float = option("10m", DURATION, "whole request incl. retries, then 504")


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """How long until a key is checked again after each kind of outcome (seconds)."""

    on_success: float = option("24h", DURATION, "after a working answer")
    on_rate_limit: float = option("1h", DURATION, "after a rate limit")
    on_no_quota: float = option("6h", DURATION, "after quota or billing exhausted")
    on_server_error: float = option("30m", DURATION, "after a server error")
    on_overload: float = option("30m", DURATION, "after an overloaded upstream")
    on_invalid_key: float = option("10d", DURATION, "after an invalid key")
    on_no_access: float = option("10d", DURATION, "after no access to the model or region")
    on_no_model: float = option("10d", DURATION, "after an unknown model")
    on_other_error: float = option("1h", DURATION, "after any other failure")
    quarantine_after: float = option("30d", DURATION, "failing this long: quarantined")
    quarantine_recheck: float = option("10d", DURATION, "check interval of a quarantined key")
    stop_checking_after: float = option("90d", DURATION, "failing this long: no more checks")
    verification_attempts: int = option(
        3, COUNT, "re-probe a retryable failure before recording it"
    )
    verification_delay: float = option("65s", DELAY, "wait between those re-probes")


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """One user rule: a status code plus a regex on a JSON path of the error body."""

    status_code: int = field(
        metadata=declare(STATUS_CODE, "the status the rule looks at", required=True)
    )
    error_path: str = field(
        metadata=declare(
            Leaf(f.dot_path, 'a dot path into the JSON error body, e.g. "error.code"'),
            "dot path into the JSON error body",
            required=True,
        )
    )
    match_pattern: str = field(
        metadata=declare(
            Leaf(f.regex, "a Python regular expression"),
            "regex searched for in the value found there",
            required=True,
        )
    )
    map_to: ErrorReason = field(metadata=declare(REASON, "the reason a match means", required=True))
    priority: int = option(
        0,
        Leaf(f.integer(), "an integer (highest matching priority wins)"),
        "highest matching priority wins",
    )
    description: str = option("", STRING, "what the rule is for")


@dataclass(frozen=True, slots=True)
class ErrorParsing:
    """User error-classification rules, applied before the built-in defaults."""

    enabled: bool = option(True, BOOL, "false: the built-in rules only")
    rules: tuple[ErrorRule, ...] = sequence(ErrorRule, "tried before the built-in rules")


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How many attempts a class of failure gets, and the backoff between them."""

    attempts: int = option(3, COUNT, "retries at most")
    backoff: float = option("0.1s", DELAY, "wait before a key already tried is used again")
    backoff_factor: float = option(
        1.5, Leaf(f.number(minimum=1.0), "a number >= 1"), "each further wait is this much longer"
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry budgets of the gateway, one per failure class."""

    enabled: bool = option(True, BOOL, "false: the first upstream answer is returned as is")
    on_key_error: RetryBudget = section(
        RetryBudget,
        "after a rate limit, with another key; a condemned key is replaced at once, outside it",
    )
    on_server_error: RetryBudget = section(
        RetryBudget,
        "after a server failure or a timeout (the key is not penalised)",
        attempts=2,
        backoff="0.5s",
        backoff_factor=2.0,
    )


@dataclass(frozen=True, slots=True)
class GatewayPolicy:
    """How the gateway streams, classifies and retries for one instance."""

    streaming_mode: StreamingMode = option("auto", enum_of(StreamingMode), "auto | disabled")
    fast_status_mapping: dict[int, ErrorReason] = mapping(
        REASON, 'e.g. {418: "no_quota"}: decided without reading the body', key=STATUS_CODE
    )
    error_parsing: ErrorParsing = section(ErrorParsing)
    retry: RetryPolicy = section(RetryPolicy, "retries happen before the client sees a byte")
    rate_limit_cooldown: float = option("60s", DURATION, "when the upstream sends no Retry-After")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    """One provider instance: an API family, an upstream, keys, models and policies.

    `api_base_url` and `default_model` default per provider type, `keys_path`
    per instance (see `llmgateway.config.defaults`); built in code without a
    `keys_path`, an instance reads no key files.
    """

    name: str
    provider_type: ProviderType = field(
        metadata=declare(enum_of(ProviderType), " | ".join(ProviderType), required=True)
    )
    enabled: bool = option(True, BOOL, "false: not served, not probed")
    api_base_url: str = field(
        metadata=declare(
            Leaf(f.http_url, "an http:// or https:// origin, optionally with a prefix"),
            "origin (+ optional prefix); default per provider type",
        )
    )
    keys_path: str = field(
        default="",
        metadata=declare(
            Leaf(f.string, 'a directory of *.txt key files, or "" for none'),
            "*.txt files, one key per line, '#' comments",
            default="keys/{name}/",
        ),
    )
    keys: tuple[str, ...] = sequence(
        Leaf(f.non_empty, "a non-empty key string", secret=True),
        "optional inline keys, may use ${VAR}",
    )
    default_model: str = field(
        metadata=declare(MODEL_NAME, "probed for shared keys; pool for unknown models")
    )
    shared_key_status: bool = option(False, BOOL, "true: one status per key for every model")
    models: dict[str, ModelConfig] = mapping(
        ModelConfig, "probed and served; empty means [default_model]", key=MODEL_NAME
    )
    access_control: AccessControl = section(AccessControl)
    timeouts: Timeouts = section(Timeouts, "upstream timeouts")
    health_policy: HealthPolicy = section(
        HealthPolicy, "when a key is checked again after each outcome"
    )
    gateway_policy: GatewayPolicy = section(GatewayPolicy)


@dataclass(frozen=True, slots=True)
class AppConfig:
    """The whole configuration file.

    `deprecations` is not an option: it says what the file wrote in a way
    still read but to be changed (shown by `config check`, logged by `serve`).
    """

    server: ServerConfig = section(ServerConfig)
    database: DatabaseConfig = section(DatabaseConfig)
    keeper: KeeperConfig = section(KeeperConfig, "background probing of every key")
    logging: LoggingConfig = section(LoggingConfig)
    providers: dict[str, ProviderConfig] = mapping(
        ProviderConfig,
        "provider instances; a name is [a-z0-9][a-z0-9_-]*",
        key=Leaf(f.instance_name, f.INSTANCE_NAME_FORM),
    )
    deprecations: tuple[str, ...] = field(default=(), compare=False)
