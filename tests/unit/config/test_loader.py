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
    LoggingConfig,
    ModelConfig,
    ServerConfig,
    Timeouts,
    WorkerConfig,
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

# Every option of the YAML block in DESIGN.md ("Configuration"), as dotted paths;
# `providers.*` stands for any instance, `models.*` for any model.
DESIGN_OPTIONS = [
    "server.host",
    "server.port",
    "server.admin_token",
    "server.max_body_mb",
    "server.max_event_subscribers",
    "server.auth_failures_per_minute",
    "database.url",
    "worker.enabled",
    "worker.max_concurrent_probes",
    "worker.keys_sync_interval",
    "logging.level",
    "logging.format",
    "logging.summary_interval",
    "providers.*.provider_type",
    "providers.*.enabled",
    "providers.*.api_base_url",
    "providers.*.keys_path",
    "providers.*.keys",
    "providers.*.default_model",
    "providers.*.shared_key_status",
    "providers.*.models",
    "providers.*.models.*.probe_path",
    "providers.*.models.*.test_payload",
    "providers.*.access_control.gateway_access_token",
    *(f"providers.*.timeouts.{k}" for k in ("connect", "first_byte", "idle", "total")),
    *(
        f"providers.*.health_policy.{k}"
        for k in (
            "on_success",
            "on_rate_limit",
            "on_no_quota",
            "on_server_error",
            "on_overload",
            "on_invalid_key",
            "on_no_access",
            "on_no_model",
            "on_other_error",
            "quarantine_after",
            "quarantine_recheck",
            "stop_checking_after",
            "verification_attempts",
            "verification_delay",
        )
    ),
    "providers.*.gateway_policy.streaming_mode",
    "providers.*.gateway_policy.fast_status_mapping",
    "providers.*.gateway_policy.error_parsing.enabled",
    *(
        f"providers.*.gateway_policy.error_parsing.rules[].{k}"
        for k in ("status_code", "error_path", "match_pattern", "map_to", "priority", "description")
    ),
    "providers.*.gateway_policy.retry.enabled",
    *(
        f"providers.*.gateway_policy.retry.{budget}.{k}"
        for budget in ("on_key_error", "on_server_error")
        for k in ("attempts", "backoff", "backoff_factor")
    ),
    "providers.*.gateway_policy.rate_limit_cooldown",
]

# Options added beyond DESIGN.md by config/schemas.py.
EXTRA_OPTIONS = [
    "server.workers",
    "server.shutdown_timeout",
    "database.pool_min_size",
    "database.pool_max_size",
    "worker.max_concurrent_probes_per_instance",
    "worker.check_interval",
    "worker.shutdown_timeout",
    "worker.confirm_within",
    "worker.server_error_cooldown",
    "worker.incident_window",
    "logging.access_log",
]


def _paths(node: object, prefix: str = "") -> set[str]:
    """Every dotted path written in a YAML tree, with `*` for any instance or model name."""
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            wildcard = prefix == "providers" or prefix.endswith(".models")
            name = "*" if wildcard else str(key)
            path = f"{prefix}.{name}" if prefix else name
            out.add(path)
            out |= _paths(value, path)
    elif isinstance(node, list):
        for item in node:
            out |= _paths(item, f"{prefix}[]")
    return out


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
        """Type, base URL, keys and token suffice; everything else comes from defaults.py."""
        provider = load_text(MINIMAL).providers["openai-main"]
        assert provider.provider_type is ProviderType.OPENAI_LIKE
        assert provider.default_model == "gpt-4o-mini"
        assert provider.models == {"gpt-4o-mini": ModelConfig()}
        assert provider.keys_path == "keys/openai-main/"
        assert provider.enabled is True

    def test_schema_defaults_agree_with_defaults_module(self, load_text: LoadText) -> None:
        """Every section loaded from defaults.py equals the dataclass defaults in schemas.py."""
        config = load_text(MINIMAL)
        provider = config.providers["openai-main"]
        assert config.server == ServerConfig()
        assert config.database == DatabaseConfig()
        assert config.worker == WorkerConfig()
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

    def test_full_example_has_every_option(self) -> None:
        """Every option of DESIGN.md's schema and of schemas.py is written in the full example."""
        from ruamel.yaml import YAML

        tree = YAML(typ="safe").load((REPO / "config" / "example_full.yaml").read_text())
        written = _paths(tree)
        missing = [p for p in DESIGN_OPTIONS + EXTRA_OPTIONS if p not in written]
        assert missing == []

    def test_full_example_documents_every_default_option(self) -> None:
        """Every option of defaults.py's templates appears in the full example (nothing forgotten)."""
        from ruamel.yaml import YAML

        written = _paths(YAML(typ="safe").load((REPO / "config" / "example_full.yaml").read_text()))
        template = defaults.app_template()
        template["providers"] = {"x": defaults.provider_template(ProviderType.GEMINI, "x")}
        assert sorted(_paths(template) - written) == []

    def test_full_example_values_are_the_defaults(self) -> None:
        """The full example's openai-main section spells out exactly the default values."""
        config = load_config(REPO / "config" / "example_full.yaml", env=EXAMPLE_ENV)
        provider = config.providers["openai-main"]
        assert provider.timeouts == Timeouts()
        assert provider.health_policy == HealthPolicy()
        assert config.worker == WorkerConfig()


def test_problems_fixture_sees_errors(problems_of: Problems) -> None:
    """A wrong value is reported (guards the fixture used by the validator tests)."""
    assert problems_of("server: {port: 0}\n")


def test_os_environ_default(write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_config(None) finds the file through LLMGW_CONFIG in the process environment."""
    path = write_config(MINIMAL)
    monkeypatch.setenv("LLMGW_CONFIG", os.fspath(path))
    assert "openai-main" in load_config().providers
