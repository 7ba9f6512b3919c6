"""Key placement, credential stripping, and the default and overridden probes."""

from __future__ import annotations

import orjson
import pytest
from multidict import CIMultiDict

from llmgateway.config.defaults import default_probe_path, default_probe_payload
from llmgateway.config.schemas import ModelConfig
from llmgateway.core.constants import ProviderType
from llmgateway.providers import (
    CREDENTIAL_HEADERS,
)
from tests.fixtures.provider_errors import ERRORS
from tests.unit.providers.factory import headers_of, make_adapter

REAL_KEY = "sk-real-upstream-key-0123456789abcdef"
GATEWAY_TOKEN = "gw-client-token-abcdef"

PLACEMENT = {
    ProviderType.OPENAI_LIKE: ("Authorization", f"Bearer {REAL_KEY}"),
    ProviderType.ANTHROPIC: ("x-api-key", REAL_KEY),
    ProviderType.GEMINI: ("x-goog-api-key", REAL_KEY),
}


def client_headers() -> CIMultiDict[str]:
    """Headers of a client request carrying its gateway token in every possible place."""
    return CIMultiDict(
        [
            ("Authorization", f"Bearer {GATEWAY_TOKEN}"),
            ("x-api-key", GATEWAY_TOKEN),
            ("X-Goog-Api-Key", GATEWAY_TOKEN),
            ("Proxy-Authorization", f"Basic {GATEWAY_TOKEN}"),
            ("authorization", f"Bearer {GATEWAY_TOKEN}-second"),
            ("Content-Type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ]
    )


@pytest.mark.parametrize("provider", list(ProviderType))
def test_apply_key_sets_only_the_real_key_the_providers_way(provider: ProviderType) -> None:
    """Every client credential is removed and exactly one provider-style key header is set."""
    headers = client_headers()
    make_adapter(provider).apply_key(headers, REAL_KEY)
    name, value = PLACEMENT[provider]
    assert headers.getall(name) == [value]
    assert all(GATEWAY_TOKEN not in v for v in headers.values())
    others = {h.lower() for h in CREDENTIAL_HEADERS} - {name.lower()}
    assert not others & {h.lower() for h in headers}
    assert headers["Content-Type"] == "application/json"
    assert headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize("provider", list(ProviderType))
def test_gateway_errors_never_carry_keys(provider: ProviderType) -> None:
    """A gateway-made error holds only the message it was given: no key, no token."""
    adapter = make_adapter(provider)
    error = adapter.error_body(401, "invalid gateway token", None)
    assert REAL_KEY.encode() not in error.body and GATEWAY_TOKEN.encode() not in error.body
    assert not {h.lower() for h in error.headers} & {h.lower() for h in CREDENTIAL_HEADERS}


DEFAULT_PROBES = {
    ProviderType.OPENAI_LIKE: (
        "/v1/chat/completions",
        {"model": "m-1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
    ),
    ProviderType.ANTHROPIC: (
        "/v1/messages",
        {"model": "m-1", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
    ),
    ProviderType.GEMINI: (
        "/v1beta/models/m-1:generateContent",
        {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": 1},
        },
    ),
}


@pytest.mark.parametrize("provider", list(ProviderType))
def test_default_probe_is_a_one_token_generation(provider: ProviderType) -> None:
    """Without overrides the probe POSTs the type's cheapest generation with the key set."""
    probe = make_adapter(provider, models={"m-1": ModelConfig()}).probe_request("m-1", REAL_KEY)
    path, payload = DEFAULT_PROBES[provider]
    assert (probe.method, probe.path) == ("POST", path)
    assert orjson.loads(probe.body) == payload
    assert probe.headers["Content-Type"] == "application/json"
    name, value = PLACEMENT[provider]
    assert probe.headers[name] == value
    assert default_probe_path(provider, "m-1") == path
    assert default_probe_payload(provider, "m-1") == payload


def test_anthropic_probes_name_the_api_version() -> None:
    """Anthropic probes carry anthropic-version 2023-06-01; other types do not."""
    assert (
        make_adapter("anthropic").probe_request("x", REAL_KEY).headers["anthropic-version"]
        == "2023-06-01"
    )
    assert (
        "anthropic-version" not in make_adapter("openai_like").probe_request("x", REAL_KEY).headers
    )


def test_probe_path_and_test_payload_override_the_defaults() -> None:
    """A model's probe_path ({model} filled) and test_payload replace the defaults."""
    models = {
        "text-embedding-004": ModelConfig(
            probe_path="/v1beta/models/{model}:embedContent",
            test_payload={"content": {"parts": [{"text": "ping"}]}},
        ),
        "gemini-2.0-flash": ModelConfig(),
    }
    adapter = make_adapter("gemini", models=models)
    probe = adapter.probe_request("text-embedding-004", REAL_KEY)
    assert probe.path == "/v1beta/models/text-embedding-004:embedContent"
    assert orjson.loads(probe.body) == {"content": {"parts": [{"text": "ping"}]}}
    assert adapter.probe_request("gemini-2.0-flash", REAL_KEY).path.endswith(
        "/gemini-2.0-flash:generateContent"
    )


def test_probes_of_different_keys_do_not_share_headers() -> None:
    """Each probe gets its own header dict; an unconfigured model still gets a default probe."""
    adapter = make_adapter("openai_like")
    first = adapter.probe_request("unlisted-model", "key-one")
    second = adapter.probe_request("unlisted-model", "key-two")
    assert first.headers["Authorization"] == "Bearer key-one"
    assert second.headers["Authorization"] == "Bearer key-two"
    assert orjson.loads(first.body)["model"] == "unlisted-model"


def test_upstream_messages_are_kept_short() -> None:
    """A huge upstream message is cut, so records and logs stay bounded."""
    body = orjson.dumps({"error": {"message": "m" * 10_000}})
    result = make_adapter("openai_like").classify_body(500, headers_of(), body)
    assert 0 < len(result.message) <= 500


def test_fixture_bodies_hold_no_real_key_material() -> None:
    """The shared fixtures carry placeholders only (the OpenAI message shows a masked key)."""
    status, _, body = ERRORS["openai_like"]["invalid_key"]
    assert status == 401 and b"***" in body
