"""The validator: every class of mistake reported with its YAML path, all in one report."""

from __future__ import annotations

import pytest

from llmgateway.config.validator import Problem, format_path
from tests.unit.config.conftest import Problems

PROVIDER = """
providers:
  p:
    provider_type: openai_like
    access_control: {gateway_access_token: tok-p-0123456789abc}
"""


def _one(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


class TestProblemText:
    def test_format(self) -> None:
        """A problem reads: path (line N): what is wrong; allowed: what would do."""
        problem = Problem(("providers", "p", "models", "gpt-4.1", "probe_path"), "is bad", "x", 7)
        assert (
            str(problem) == 'providers.p.models["gpt-4.1"].probe_path (line 7): is bad; allowed: x'
        )

    def test_indices(self) -> None:
        """Sequence items are shown as [i]."""
        assert format_path(("a", "rules", 0, "map_to")) == "a.rules[0].map_to"


class TestUnknownKeys:
    def test_did_you_mean(self, problems_of: Problems) -> None:
        """A misspelt key is reported with the closest valid key and the list of valid keys."""
        line = _one(problems_of("server:\n  prot: 80\n"))
        assert line.startswith("server.prot (line 2): unknown key 'prot'; did you mean 'port'?")
        assert "allowed: host, port, admin_token" in line

    def test_top_level(self, problems_of: Problems) -> None:
        """An unknown section is reported at the top level."""
        line = _one(problems_of("databse:\n  url: sqlite:///x.db\n"))
        assert "databse (line 1): unknown key 'databse'; did you mean 'database'?" in line

    def test_no_suggestion_when_nothing_close(self, problems_of: Problems) -> None:
        """A key unlike any valid key gets no guess, only the allowed list."""
        line = _one(problems_of(PROVIDER + "    zzzzzz: 1\n"))
        assert "providers.p.zzzzzz (line 6): unknown key 'zzzzzz'; allowed:" in line
        assert "did you mean" not in line

    def test_deep_in_provider(self, problems_of: Problems) -> None:
        """Unknown keys deep in a provider are found too."""
        line = _one(problems_of(PROVIDER + "    timeouts: {conect: 5}\n"))
        assert (
            "providers.p.timeouts.conect (line 6): unknown key 'conect'; did you mean 'connect'?"
            in line
        )


class TestTypes:
    @pytest.mark.parametrize(
        ("yaml", "path", "fragment"),
        [
            ("server: {port: abc}\n", "server.port (line 1)", "'abc' is not an integer"),
            ("server: {host: 5}\n", "server.host (line 1)", "5 is not a string"),
            (
                "keeper: {enabled: maybe}\n",
                "keeper.enabled (line 1)",
                "'maybe' is not true or false",
            ),
            ("server: 5\n", "server (line 1)", "5 is not a mapping"),
            (
                "keeper: {max_concurrent_probes: 2.5}\n",
                "keeper.max_concurrent_probes",
                "not an integer",
            ),
            ("server: {max_body_mb: lots}\n", "server.max_body_mb", "'lots' is not a number"),
            (
                "logging: {summary_interval: soon}\n",
                "logging.summary_interval",
                "is not a duration",
            ),
        ],
    )
    def test_wrong_type(self, problems_of: Problems, yaml: str, path: str, fragment: str) -> None:
        """A value of the wrong type is reported with its path and the expected type."""
        line = _one(problems_of(yaml))
        assert line.startswith(path) and fragment in line and "allowed:" in line

    def test_keys_must_be_a_list_of_strings(self, problems_of: Problems) -> None:
        """Each inline key must be a non-empty string; a secret is masked in the message."""
        problems = problems_of(PROVIDER + '    keys: ["", 42, "sk-good-key-0123456789"]\n')
        assert [p.split(":")[0] for p in problems] == [
            "providers.p.keys[0] (line 6)",
            "providers.p.keys[1] (line 6)",
        ]

    def test_secret_values_are_masked(self, problems_of: Problems) -> None:
        """A wrongly typed secret never appears whole in the report."""
        text = PROVIDER.replace("tok-p-0123456789abc", "[tok-very-secret-value-999]")
        line = _one(problems_of(text))
        assert "tok-very-secret-value-999" not in line
        assert "gateway_access_token" in line

    def test_missing_provider_type(self, problems_of: Problems) -> None:
        """A provider without provider_type is told what types exist."""
        line = _one(
            problems_of(
                "providers:\n  p:\n    access_control: {gateway_access_token: tok-1-0123456789abcdef}\n"
            )
        )
        assert line.startswith("providers.p.provider_type (line 2): is missing")
        assert "openai_like | anthropic | gemini" in line

    def test_missing_rule_fields(self, problems_of: Problems) -> None:
        """An error rule without its required fields lists each missing one."""
        text = PROVIDER + "    gateway_policy: {error_parsing: {rules: [{priority: 1}]}}\n"
        problems = problems_of(text)
        assert sorted(p.split(" ")[0] for p in problems) == [
            f"providers.p.gateway_policy.error_parsing.rules[0].{k}"
            for k in ("error_path", "map_to", "match_pattern", "status_code")
        ]


class TestValues:
    @pytest.mark.parametrize("value", ["0", "-5s", "0ms", "-1"])
    def test_zero_or_negative_duration(self, problems_of: Problems, value: str) -> None:
        """Zero and negative durations are refused with the accepted forms."""
        line = _one(problems_of(PROVIDER + f'    timeouts: {{idle: "{value}"}}\n'))
        assert line.startswith("providers.p.timeouts.idle (line 6)")
        assert "a duration > 0" in line

    @pytest.mark.parametrize(
        ("yaml", "path", "allowed"),
        [
            (
                PROVIDER.replace("openai_like", "openai"),
                "providers.p.provider_type",
                "openai_like | anthropic | gemini",
            ),
            (
                PROVIDER + "    gateway_policy: {streaming_mode: sometimes}\n",
                "providers.p.gateway_policy.streaming_mode",
                "auto | disabled",
            ),
            (
                "logging: {level: loud}\n",
                "logging.level",
                "debug | info | warning | error | critical",
            ),
            ("logging: {format: xml}\n", "logging.format", "console | json"),
        ],
    )
    def test_bad_enum(self, problems_of: Problems, yaml: str, path: str, allowed: str) -> None:
        """An enum value outside its set names the allowed values."""
        line = _one(problems_of(yaml))
        assert line.startswith(path) and f"allowed: {allowed}" in line

    def test_bad_map_to(self, problems_of: Problems) -> None:
        """An error rule's map_to must be an ErrorReason value."""
        text = PROVIDER + (
            "    gateway_policy:\n      error_parsing:\n        rules:\n"
            "          - {status_code: 400, error_path: e, match_pattern: x, map_to: broke}\n"
        )
        line = _one(problems_of(text))
        assert line.startswith("providers.p.gateway_policy.error_parsing.rules[0].map_to (line 9)")
        assert "no_quota" in line and "invalid_key" in line

    def test_invalid_regex(self, problems_of: Problems) -> None:
        """An invalid match_pattern is reported with the regex compiler's message."""
        text = PROVIDER + (
            "    gateway_policy:\n      error_parsing:\n        rules:\n"
            "          - status_code: 400\n            error_path: error.code\n"
            '            match_pattern: "quota[("\n            map_to: no_quota\n'
        )
        line = _one(problems_of(text))
        assert line.startswith(
            "providers.p.gateway_policy.error_parsing.rules[0].match_pattern (line 11)"
        )
        assert "not a valid regular expression: unterminated character set at position 5" in line

    @pytest.mark.parametrize("path", ["error..code", ".error", "error.", "."])
    def test_error_path_segments(self, problems_of: Problems, path: str) -> None:
        """An error_path with an empty segment is refused when the file loads, not later."""
        text = PROVIDER + (
            "    gateway_policy:\n      error_parsing:\n        rules:\n"
            f'          - {{status_code: 400, error_path: "{path}", match_pattern: x, map_to: no_quota}}\n'
        )
        line = _one(problems_of(text))
        assert line.startswith(
            "providers.p.gateway_policy.error_parsing.rules[0].error_path (line 9)"
        )
        assert f"{path!r} is not a dot path like error.code" in line

    def test_fast_status_mapping(self, problems_of: Problems) -> None:
        """fast_status_mapping needs status-code keys and ErrorReason values."""
        text = (
            PROVIDER
            + "    gateway_policy:\n      fast_status_mapping: {418: no_quota, 99: no_quota, abc: no_quota, 402: nope}\n"
        )
        problems = problems_of(text)
        assert [p.split(" (")[0] for p in problems] == [
            "providers.p.gateway_policy.fast_status_mapping.99",
            "providers.p.gateway_policy.fast_status_mapping.abc",
            "providers.p.gateway_policy.fast_status_mapping.402",
        ]

    @pytest.mark.parametrize("port", [0, 65536, -1])
    def test_port_range(self, problems_of: Problems, port: int) -> None:
        """A port outside 1-65535 is refused."""
        line = _one(problems_of(f"server: {{port: {port}}}\n"))
        assert line.startswith("server.port (line 1)") and "allowed: an integer 1-65535" in line

    @pytest.mark.parametrize("url", ["mysql://h/db", "sqlite:/rel.db", "data.db", "sqlite://"])
    def test_database_scheme(self, problems_of: Problems, url: str) -> None:
        """Only sqlite:/// and postgresql:// or postgres:// URLs are accepted."""
        line = _one(problems_of(f'database: {{url: "{url}"}}\n'))
        assert line.startswith("database.url (line 1)") and "postgresql://" in line

    @pytest.mark.parametrize(
        "url",
        ["sqlite:///data/x.db", "sqlite:////abs/x.db", "postgres://h/db", "postgresql://u:p@h:5/d"],
    )
    def test_database_scheme_accepted(self, problems_of: Problems, url: str) -> None:
        """The accepted database URL forms pass (only the port error remains)."""
        assert _one(problems_of(f'database: {{url: "{url}"}}\nserver: {{port: 0}}\n')).startswith(
            "server.port"
        )

    @pytest.mark.parametrize("name", ["Upper", "-lead", "has space", "dot.ted", "_x"])
    def test_instance_names(self, problems_of: Problems, name: str) -> None:
        """Instance names must match [a-z0-9][a-z0-9_-]*."""
        line = _one(problems_of(PROVIDER.replace("  p:", f'  "{name}":')))
        assert "is not a valid instance name" in line and "line 3" in line

    def test_default_model_not_in_models(self, problems_of: Problems) -> None:
        """default_model must be one of models when models is given."""
        line = _one(problems_of(PROVIDER + "    default_model: big\n    models: {small: {}}\n"))
        assert line.startswith(
            "providers.p.default_model (line 6): 'big' is not one of the configured models"
        )
        assert "allowed: small" in line

    def test_empty_token(self, problems_of: Problems) -> None:
        """An enabled instance without gateway token is refused."""
        line = _one(problems_of(PROVIDER.replace("tok-p-0123456789abc", '""')))
        assert line.startswith("providers.p.access_control.gateway_access_token (line 5): is empty")

    def test_empty_token_allowed_when_disabled(self, problems_of: Problems) -> None:
        """A disabled instance may go without a token."""
        text = PROVIDER.replace("tok-p-0123456789abc", '""') + "    enabled: false\n"
        assert _one(problems_of(text + "server: {port: 0}\n")).startswith("server.port")

    def test_duplicate_token(self, problems_of: Problems) -> None:
        """Two instances with one token are refused, naming the first owner and masking the token."""
        text = (
            PROVIDER
            + "  q:\n    provider_type: gemini\n    access_control: {gateway_access_token: tok-p-0123456789abc}\n"
        )
        line = _one(problems_of(text))
        assert line.startswith("providers.q.access_control.gateway_access_token (line 8)")
        assert "already used by instance 'p'" in line
        assert "tok-p-0123456789abc" not in line and "tok-...9abc" in line

    @pytest.mark.parametrize(
        ("yaml", "path"),
        [
            (
                PROVIDER + "    gateway_policy: {retry: {on_key_error: {attempts: 0}}}\n",
                "providers.p.gateway_policy.retry.on_key_error.attempts",
            ),
            (
                PROVIDER + "    health_policy: {verification_attempts: 0}\n",
                "providers.p.health_policy.verification_attempts",
            ),
            ("server: {max_body_mb: 0}\n", "server.max_body_mb"),
            ("server: {max_body_mb: -3}\n", "server.max_body_mb"),
            (
                PROVIDER
                + "    gateway_policy: {retry: {on_server_error: {backoff_factor: 0.5}}}\n",
                "providers.p.gateway_policy.retry.on_server_error.backoff_factor",
            ),
            (PROVIDER + "    api_base_url: api.openai.com\n", "providers.p.api_base_url"),
            (
                PROVIDER + "    models: {m: {probe_path: v1/x}}\n    default_model: m\n",
                "providers.p.models.m.probe_path",
            ),
            ("database: {pool_min_size: 5, pool_max_size: 2}\n", "database.pool_min_size"),
        ],
    )
    def test_bounds(self, problems_of: Problems, yaml: str, path: str) -> None:
        """Counts below 1, non-positive sizes and malformed URLs or paths are refused."""
        assert _one(problems_of(yaml)).startswith(path + " (line")


class TestOneReport:
    def test_many_mistakes_all_reported(self, problems_of: Problems) -> None:
        """A file with many mistakes gets every one of them in one report, in file order."""
        text = """\
            server:
              port: 70000
              hots: x
            database:
              url: "mysql://x"
            logging:
              level: loud
            providers:
              Bad:
                provider_type: openai_like
              p:
                provider_type: openai
                keys: ["${UNSET_KEY}"]
                default_model: a
                models: {b: {}}
                timeouts: {connect: 0}
                access_control: {gateway_access_token: ""}
                gateway_policy:
                  streaming_mode: maybe
                  error_parsing:
                    rules:
                      - {status_code: 400, error_path: e, match_pattern: "(", map_to: nope}
        """
        problems = problems_of(text)
        assert [p.split(" (line")[0] for p in problems] == [
            "server.port",
            "server.hots",
            "database.url",
            "logging.level",
            "providers.Bad",
            "providers.p.provider_type",
            "providers.p.keys[0]",
            "providers.p.default_model",
            "providers.p.timeouts.connect",
            "providers.p.access_control.gateway_access_token",
            "providers.p.gateway_policy.streaming_mode",
            "providers.p.gateway_policy.error_parsing.rules[0].match_pattern",
            "providers.p.gateway_policy.error_parsing.rules[0].map_to",
        ]
        assert all("(line " in p for p in problems)
