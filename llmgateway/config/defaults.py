"""Default trees for the loader, and the defaults that are not options: those of a provider type.

Every option's default is declared on its schema field; `app_template()`,
`provider_template()`, `model_template()` and `rule_template()` are derived
from those declarations, as a user would write them (`"24h"`), and the loader
merges the user's file over them. What differs between API families (upstream,
default model, probe path, payload and headers) lives here; the provider
adapters build their probes with `default_probe_path` / `default_probe_payload`
/ `default_probe_headers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, assert_never
from urllib.parse import quote

from llmgateway.config.options import template
from llmgateway.config.schemas import AppConfig, ErrorRule, ModelConfig, ProviderConfig
from llmgateway.core.constants import ProviderType

ANTHROPIC_VERSION: Final = "2023-06-01"
"""The `anthropic-version` header sent with Anthropic probes."""

PROBE_PROMPT: Final = "hi"
"""The one-word prompt of every default probe."""


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
    """A fresh tree of the top-level defaults (server, database, keeper, logging, providers)."""
    return template(AppConfig)


def provider_template(provider_type: ProviderType, name: str) -> dict[str, Any]:
    """A fresh tree of every default of one provider instance of `provider_type` called `name`.

    `provider_type` itself is not part of the template: the user must name it.
    """
    kind = TYPE_DEFAULTS[provider_type]
    out = template(ProviderConfig)
    out["keys_path"] = out["keys_path"].format(name=name)
    out["api_base_url"] = kind.api_base_url
    out["default_model"] = kind.default_model
    return out


def model_template() -> dict[str, Any]:
    """A fresh tree of the defaults of one entry of `models`."""
    return template(ModelConfig)


def rule_template() -> dict[str, Any]:
    """A fresh tree of the defaults of one `error_parsing.rules` entry."""
    return template(ErrorRule)


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
