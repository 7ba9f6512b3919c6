"""The loader: path resolution, merge over defaults, the built dataclasses, the example files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmgateway.config import defaults
from llmgateway.config.loader import DEFAULT_CONFIG_PATH, load_config, resolve_config_path
from llmgateway.config.schemas import (
    DatabaseConfig,
    ErrorRule,
    GatewayPolicy,
    HealthPolicy,
    KeeperConfig,
    LoggingConfig,
    ModelConfig,
    ServerConfig,
    Timeouts,
)
from llmgateway.core.constants import ErrorReason, ProviderType, StreamingMode
from llmgateway.core.errors import ConfigError
from tests.unit.config.conftest import MINIMAL, LoadText, Problems, WriteConfig

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_ENV = {
    "OPENAI_MAIN_TOKEN": "tok-a-0123456789abcdef",
    "CLAUDE_TOKEN": "tok-b-0123456789abcdef",
    "GEMINI_TOKEN": "tok-c-0123456789abcdef",
}


class TestResolveConfigPath:
    def test_cli_value_wins(self) -> None:
        """--config wins over LLMGW_CONFIG."""
        assert resolve_config_path("a.yaml", {"LLMGW_CONFIG": "b.yaml"}) == Path("a.yaml")

    def test_environment_next(self) -> None:
        """Without --config, LLMGW_CONFIG names the file."""
        assert resolve_config_path(None, {"LLMGW_CONFIG": "b.yaml"}) == Path("b.yaml")

    def test_default_last(self) -> None:
        """Without either, config/providers.yaml is used."""
        assert resolve_config_path(None, {}) == DEFAULT_CONFIG_PATH == Path("config/providers.yaml")

    def test_empty_environment_value_ignored(self) -> None:
        """An empty LLMGW_CONFIG counts as unset."""
        assert resolve_config_path(None, {"LLMGW_CONFIG": ""}) == DEFAULT_CONFIG_PATH


class TestLoadErrors:
    def test_missing_file_suggests_create(self, tmp_path: Path) -> None:
        """A missing file is one ConfigError naming the path and `llmgateway config create`."""
        path = tmp_path / "nope.yaml"
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={})
        assert str(path) in str(caught.value)
        assert "llmgateway config create" in str(caught.value)

    def test_yaml_syntax_error_has_position(self, write_config: WriteConfig) -> None:
        """Invalid YAML is reported with its line and column."""
        path = write_config("server:\n  port: [1, 2\nlogging: {}\n")
        with pytest.raises(ConfigError, match=r"invalid YAML \(line \d+, column \d+\)"):
            load_config(path, env={})

    def test_duplicate_key_is_an_error(self, write_config: WriteConfig) -> None:
        """A key written twice is refused instead of silently keeping one value."""
        path = write_config("server:\n  port: 1\n  port: 2\n")
        with pytest.raises(ConfigError, match="invalid YAML"):
            load_config(path, env={})

    def test_top_level_must_be_mapping(self, write_config: WriteConfig) -> None:
        """A file whose top level is a list is refused."""
        with pytest.raises(ConfigError, match="top level must be a mapping"):
            load_config(write_config("- a\n- b\n"), env={})

    def test_empty_file_is_all_defaults(self, load_text: LoadText) -> None:
        """An empty file loads as the defaults with no provider."""
        config = load_text("# nothing yet\n")
        assert config.server == ServerConfig() and config.providers == {}


class TestDefaults:
    def test_minimal_provider_is_complete(self, load_text: LoadText) -> None:
        """Type, base URL, keys and token suffice; everything else takes its declared default."""
        provider = load_text(MINIMAL).providers["openai-main"]
        assert provider.provider_type is ProviderType.OPENAI_LIKE
        assert provider.default_model == "gpt-4o-mini"
        assert provider.models == {"gpt-4o-mini": ModelConfig()}
        assert provider.keys_path == "keys/openai-main/"
        assert provider.enabled is True

    def test_loaded_defaults_are_the_field_defaults(self, load_text: LoadText) -> None:
        """What the loader fills in from the declared defaults equals each field's own default.

        Both come from one declaration: the default as written is merged under the file
        and parsed by the validator, the field default is parsed when the class is made.
        """
        config = load_text(MINIMAL)
        provider = config.providers["openai-main"]
        assert config.server == ServerConfig()
        assert config.database == DatabaseConfig()
        assert config.keeper == KeeperConfig()
        assert config.logging == LoggingConfig()
        assert provider.timeouts == Timeouts()
        assert provider.health_policy == HealthPolicy()
        assert provider.gateway_policy == GatewayPolicy()

    @pytest.mark.parametrize(
        ("kind", "url", "model"),
        [
            ("openai_like", "https://api.openai.com", "gpt-4o-mini"),
            ("anthropic", "https://api.anthropic.com", "claude-3-5-haiku-latest"),
            ("gemini", "https://generativelanguage.googleapis.com", "gemini-2.0-flash"),
        ],
    )
    def test_type_defaults(self, load_text: LoadText, kind: str, url: str, model: str) -> None:
        """Without api_base_url and default_model, the type's defaults apply."""
        provider = load_text(
            f"providers:\n  x:\n    provider_type: {kind}\n"
            "    access_control: {gateway_access_token: tok-0123456789abcdef}\n"
        ).providers["x"]
        assert (provider.api_base_url, provider.default_model) == (url, model)

    def test_api_base_url_trailing_slash_dropped(self, load_text: LoadText) -> None:
        """A trailing slash on api_base_url is removed so paths join cleanly."""
        text = MINIMAL.replace('"https://api.openai.com"', '"https://example.test/prefix/"')
        assert (
            load_text(text).providers["openai-main"].api_base_url == "https://example.test/prefix"
        )

    def test_nested_override_keeps_sibling_defaults(self, load_text: LoadText) -> None:
        """Overriding one nested value keeps every sibling default (deep merge)."""
        text = (
            MINIMAL + "    gateway_policy:\n      retry:\n        on_server_error: {attempts: 5}\n"
        )
        retry = load_text(text).providers["openai-main"].gateway_policy.retry
        assert retry.on_server_error.attempts == 5
        assert retry.on_server_error.backoff == 0.5
        assert retry.on_key_error.attempts == 3

    def test_lists_replace(self, load_text: LoadText) -> None:
        """A list in the file replaces the default list instead of extending it."""
        text = MINIMAL.replace('keys: ["sk-test-0123456789abcdef"]', 'keys: ["a-key", "b-key"]')
        assert load_text(text).providers["openai-main"].keys == ("a-key", "b-key")

    def test_models_as_list_and_full_config(self, load_text: LoadText) -> None:
        """Models may be listed by name; rules, fast mapping and enums become typed values."""
        text = MINIMAL + (
            "    default_model: m2\n"
            "    models: [m1, m2]\n"
            "    gateway_policy:\n"
            "      streaming_mode: disabled\n"
            "      fast_status_mapping: {418: no_quota, '402': no_quota}\n"
            "      error_parsing:\n"
            "        rules:\n"
            "          - {status_code: 400, error_path: error.code, match_pattern: q, map_to: no_quota}\n"
        )
        provider = load_text(text).providers["openai-main"]
        assert list(provider.models) == ["m1", "m2"]
        policy = provider.gateway_policy
        assert policy.streaming_mode is StreamingMode.DISABLED
        assert policy.fast_status_mapping == {418: ErrorReason.NO_QUOTA, 402: ErrorReason.NO_QUOTA}
        assert policy.error_parsing.rules == (
            ErrorRule(400, "error.code", "q", ErrorReason.NO_QUOTA, priority=0, description=""),
        )
        assert policy.error_parsing.rules[0].map_to is ErrorReason.NO_QUOTA

    def test_model_overrides(self, load_text: LoadText) -> None:
        """A model's probe_path and test_payload are kept as written."""
        text = MINIMAL + (
            "    models:\n      gpt-4o-mini:\n        probe_path: /v1/x\n"
            "        test_payload: {a: [1, {b: c}]}\n"
        )
        model = load_text(text).providers["openai-main"].models["gpt-4o-mini"]
        assert model == ModelConfig(probe_path="/v1/x", test_payload={"a": [1, {"b": "c"}]})

    def test_null_sections_mean_defaults(self, load_text: LoadText) -> None:
        """A section left empty (`server:`) takes every default."""
        config = load_text("server:\nlogging:\nproviders:\n")
        assert config.server == ServerConfig() and config.providers == {}


class TestKeeperSection:
    def test_keeper_is_read_without_warning(self, load_text: LoadText) -> None:
        """`keeper:` is the section's name: read as is, nothing deprecated."""
        config = load_text("keeper: {enabled: false, check_interval: 2s}\n")
        assert config.keeper == KeeperConfig(enabled=False, check_interval=2.0)
        assert config.deprecations == ()

    def test_old_worker_name_is_read_with_a_warning_naming_both(self, load_text: LoadText) -> None:
        """The old `worker:` still configures the keeper, with one warning naming both names."""
        config = load_text("worker: {enabled: false, check_interval: 2s}\n")
        assert config.keeper == KeeperConfig(enabled=False, check_interval=2.0)
        assert len(config.deprecations) == 1
        assert "`worker:`" in config.deprecations[0] and "`keeper:`" in config.deprecations[0]

    def test_problems_under_the_old_name_show_the_old_name(self, problems_of: Problems) -> None:
        """A mistake inside `worker:` is reported where the user wrote it."""
        problems = problems_of("server: {}\nworker:\n  enabled: maybe\n")
        assert len(problems) == 1
        assert problems[0].startswith("worker.enabled (line 3): 'maybe' is not true or false")

    def test_both_names_at_once_is_an_error(self, problems_of: Problems) -> None:
        """`worker:` and `keeper:` together are refused: which one counts would be a guess."""
        problems = problems_of("keeper: {enabled: true}\nworker: {enabled: false}\n")
        assert len(problems) == 1
        assert problems[0].startswith("worker (line 2): is the old name of the `keeper` section")


class TestProbeDefaults:
    def test_openai(self) -> None:
        """openai_like probes POST /v1/chat/completions with one output token."""
        assert defaults.default_probe_path(ProviderType.OPENAI_LIKE, "m") == "/v1/chat/completions"
        assert defaults.default_probe_payload(ProviderType.OPENAI_LIKE, "m") == {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
        }

    def test_anthropic(self) -> None:
        """anthropic probes POST /v1/messages with max_tokens 1 and the API version header."""
        assert defaults.default_probe_path(ProviderType.ANTHROPIC, "c") == "/v1/messages"
        payload = defaults.default_probe_payload(ProviderType.ANTHROPIC, "c")
        assert payload["model"] == "c" and payload["max_tokens"] == 1
        assert defaults.default_probe_headers(ProviderType.ANTHROPIC) == {
            "anthropic-version": "2023-06-01"
        }
        assert defaults.default_probe_headers(ProviderType.GEMINI) == {}

    def test_gemini(self) -> None:
        """gemini probes generateContent of the model in the path with maxOutputTokens 1."""
        path = defaults.default_probe_path(ProviderType.GEMINI, "gemini-2.0-flash")
        assert path == "/v1beta/models/gemini-2.0-flash:generateContent"
        payload = defaults.default_probe_payload(ProviderType.GEMINI, "g")
        assert payload["generationConfig"] == {"maxOutputTokens": 1}
        assert "model" not in payload

    def test_payloads_are_fresh_copies(self) -> None:
        """Mutating a returned payload never changes the next one."""
        first = defaults.default_probe_payload(ProviderType.OPENAI_LIKE, "m")
        first["messages"].append("junk")
        assert len(defaults.default_probe_payload(ProviderType.OPENAI_LIKE, "m")["messages"]) == 1


class TestExamples:
    @pytest.mark.parametrize("name", ["example_minimal.yaml", "example_full.yaml"])
    def test_examples_load_clean(self, name: str) -> None:
        """Both example files load and validate without a single problem."""
        config = load_config(REPO / "config" / name, env=EXAMPLE_ENV)
        assert "openai-main" in config.providers


def test_problems_fixture_sees_errors(problems_of: Problems) -> None:
    """A wrong value is reported (guards the fixture used by the validator tests)."""
    assert problems_of("server: {port: 0}\n")


def test_os_environ_default(write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_config(None) finds the file through LLMGW_CONFIG in the process environment."""
    path = write_config(MINIMAL)
    monkeypatch.setenv("LLMGW_CONFIG", os.fspath(path))
    assert "openai-main" in load_config().providers
