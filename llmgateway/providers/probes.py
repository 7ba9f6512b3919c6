"""Default probes: the cheapest real generation per provider type.

A probe is a POST of a one-token generation; a model's `probe_path` and
`test_payload` override the defaults. `{model}` in a path is replaced by the
model name. The config defaults (config/defaults.py) share these.
"""

from __future__ import annotations

from typing import Any, Final, assert_never
from urllib.parse import quote

from llmgateway.core.constants import ProviderType

PROBE_PROMPT: Final = "Hi"
"""The user message of every default probe."""

ANTHROPIC_VERSION: Final = "2023-06-01"
"""The `anthropic-version` header sent on probes when none is configured."""

DEFAULT_PROBE_PATHS: Final = {
    ProviderType.OPENAI_LIKE: "/v1/chat/completions",
    ProviderType.ANTHROPIC: "/v1/messages",
    ProviderType.GEMINI: "/v1beta/models/{model}:generateContent",
}
"""Path templates of the default probes; `{model}` is replaced by the (quoted) model name."""


def render_probe_path(template: str, model: str) -> str:
    """Fill `{model}` in a probe path template (no other brace is interpreted)."""
    return template.replace("{model}", quote(model, safe="-._~/"))


def default_probe_path(provider_type: ProviderType, model: str) -> str:
    """The default probe path of `provider_type` for `model`."""
    return render_probe_path(DEFAULT_PROBE_PATHS[provider_type], model)


def default_probe_payload(provider_type: ProviderType, model: str) -> dict[str, Any]:
    """A fresh JSON payload of the one-token default probe of `provider_type` for `model`."""
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
