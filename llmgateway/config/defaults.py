"""The single source of default configuration values.

The loader merges the user's file over `app_template()` and every provider over
`provider_template()`; the per-type values (upstream, default model, probe) live
here too, and the provider adapters build their probes with
`default_probe_path` / `default_probe_payload` / `default_probe_headers`.
Durations are written as the user would write them (`"24h"`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, assert_never
from urllib.parse import quote

from llmgateway.core.constants import ProviderType

ANTHROPIC_VERSION: Final = "2023-06-01"
"""The `anthropic-version` header sent with Anthropic probes."""

PROBE_PROMPT: Final = "hi"
"""The one-word prompt of every default probe."""

_SERVER: Final[dict[str, Any]] = {
    "host": "0.0.0.0",
    "port": 55300,
    "admin_token": "",
    "max_body_mb": 32,
    "max_event_subscribers": 100,
    "auth_failures_per_minute": 60,
    "workers": 1,
    "shutdown_timeout": "30s",
}
_DATABASE: Final[dict[str, Any]] = {
    "url": "sqlite:///data/llmgateway.db",
    "pool_min_size": 1,
    "pool_max_size": 10,
}
_WORKER: Final[dict[str, Any]] = {
    "enabled": True,
    "max_concurrent_probes": 10,
    "max_concurrent_probes_per_instance": 5,
    "keys_sync_interval": "60s",
    "check_interval": "5s",
    "shutdown_timeout": "10s",
    "confirm_within": "30s",
    "server_error_cooldown": "30s",
    "incident_window": "10s",
}
_LOGGING: Final[dict[str, Any]] = {
    "level": "info",
    "format": "console",
    "summary_interval": "30m",
    "access_log": True,
}
_TIMEOUTS: Final[dict[str, Any]] = {
    "connect": "5s",
    "first_byte": "60s",
    "idle": "120s",
    "total": "10m",
}
_HEALTH_POLICY: Final[dict[str, Any]] = {
    "on_success": "24h",
    "on_rate_limit": "1h",
    "on_no_quota": "6h",
    "on_server_error": "30m",
    "on_overload": "30m",
    "on_invalid_key": "10d",
    "on_no_access": "10d",
    "on_no_model": "10d",
    "on_other_error": "1h",
    "quarantine_after": "30d",
    "quarantine_recheck": "10d",
    "stop_checking_after": "90d",
    "verification_attempts": 3,
    "verification_delay": "65s",
}
_GATEWAY_POLICY: Final[dict[str, Any]] = {
    "streaming_mode": "auto",
    "fast_status_mapping": {},
    "error_parsing": {"enabled": True, "rules": []},
    "retry": {
        "enabled": True,
        "on_key_error": {"attempts": 3, "backoff": "0.1s", "backoff_factor": 1.5},
        "on_server_error": {"attempts": 2, "backoff": "0.5s", "backoff_factor": 2.0},
    },
    "rate_limit_cooldown": "60s",
}
_MODEL: Final[dict[str, Any]] = {"probe_path": None, "test_payload": None}
_RULE: Final[dict[str, Any]] = {"priority": 0, "description": ""}

KEYS_PATH_PATTERN: Final = "keys/{name}/"
"""Default `keys_path` of an instance, relative to the working directory."""


@dataclass(frozen=True, slots=True)
class TypeDefaults:
    """What differs between API families when the user says nothing."""

    api_base_url: str
    default_model: str
    probe_path: str
    """May contain `{model}`."""


TYPE_DEFAULTS: Final = MappingProxyType(
    {
        ProviderType.OPENAI_LIKE: TypeDefaults(
            api_base_url="https://api.openai.com",
            default_model="gpt-4o-mini",
            probe_path="/v1/chat/completions",
        ),
        ProviderType.ANTHROPIC: TypeDefaults(
            api_base_url="https://api.anthropic.com",
            default_model="claude-3-5-haiku-latest",
            probe_path="/v1/messages",
        ),
        ProviderType.GEMINI: TypeDefaults(
            api_base_url="https://generativelanguage.googleapis.com",
            default_model="gemini-2.0-flash",
            probe_path="/v1beta/models/{model}:generateContent",
        ),
    }
)
"""Per provider type: upstream origin, default model and probe path."""


def app_template() -> dict[str, Any]:
    """A fresh copy of the top-level defaults (server, database, worker, logging, providers)."""
    return {
        "server": copy.deepcopy(_SERVER),
        "database": copy.deepcopy(_DATABASE),
        "worker": copy.deepcopy(_WORKER),
        "logging": copy.deepcopy(_LOGGING),
        "providers": {},
    }


def provider_template(provider_type: ProviderType, name: str) -> dict[str, Any]:
    """A fresh copy of every default of one provider instance of `provider_type`.

    `provider_type` itself is not part of the template: the user must name it.
    """
    kind = TYPE_DEFAULTS[provider_type]
    return {
        "enabled": True,
        "api_base_url": kind.api_base_url,
        "keys_path": KEYS_PATH_PATTERN.format(name=name),
        "keys": [],
        "default_model": kind.default_model,
        "shared_key_status": False,
        "models": {},
        "access_control": {"gateway_access_token": ""},
        "timeouts": copy.deepcopy(_TIMEOUTS),
        "health_policy": copy.deepcopy(_HEALTH_POLICY),
        "gateway_policy": copy.deepcopy(_GATEWAY_POLICY),
    }


def model_template() -> dict[str, Any]:
    """A fresh copy of the defaults of one entry of `models`."""
    return dict(_MODEL)


def rule_template() -> dict[str, Any]:
    """A fresh copy of the defaults of one `error_parsing.rules` entry."""
    return dict(_RULE)


def render_probe_path(template: str, model: str) -> str:
    """Fill `{model}` in a probe path template with the quoted model name (no other brace)."""
    return template.replace("{model}", quote(model, safe="-._~/"))


def default_probe_path(provider_type: ProviderType, model: str) -> str:
    """The path of the default probe request for `model` (POST)."""
    return render_probe_path(TYPE_DEFAULTS[provider_type].probe_path, model)


def default_probe_payload(provider_type: ProviderType, model: str) -> dict[str, Any]:
    """The JSON body of the default probe: the cheapest real generation (one output token)."""
    match provider_type:
        case ProviderType.OPENAI_LIKE:
            return {
                "model": model,
                "messages": [{"role": "user", "content": PROBE_PROMPT}],
                "max_tokens": 1,
            }
        case ProviderType.ANTHROPIC:
            return {
                "model": model,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": PROBE_PROMPT}],
            }
        case ProviderType.GEMINI:
            return {
                "contents": [{"role": "user", "parts": [{"text": PROBE_PROMPT}]}],
                "generationConfig": {"maxOutputTokens": 1},
            }
        case _:
            assert_never(provider_type)


def default_probe_headers(provider_type: ProviderType) -> dict[str, str]:
    """Extra headers the default probe needs besides the key (Anthropic's API version)."""
    if provider_type is ProviderType.ANTHROPIC:
        return {"anthropic-version": ANTHROPIC_VERSION}
    return {}
