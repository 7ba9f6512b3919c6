"""`${VAR}` and `${VAR:-default}` resolution in every string of the file."""

from __future__ import annotations

import pytest

from llmgateway.config.loader import load_config
from llmgateway.config.variables import substitute
from llmgateway.core.errors import ConfigError
from tests.unit.config.conftest import LoadText, Problems, WriteConfig

BASE = """
server:
  admin_token: "{admin}"
database:
  url: "{url}"
providers:
  p:
    provider_type: openai_like
    keys: ["{key}"]
    access_control:
      gateway_access_token: "{token}"
"""


def _config(
    admin: str = "",
    url: str = "sqlite:///x.db",
    key: str = "k",
    token: str = "tok-default-0123456789",
) -> str:
    return BASE.format(admin=admin, url=url, key=key, token=token)


class TestSubstitute:
    def test_whole_value(self) -> None:
        """A reference that is the whole string becomes the variable's value."""
        assert substitute("${A}", {"A": "alpha"}) == ("alpha", [])

    def test_inside_longer_string(self) -> None:
        """References inside a longer string are replaced in place, several per string."""
        text, problems = substitute(
            "postgresql://u:${PW}@${HOST}:5432/db", {"PW": "s3", "HOST": "h"}
        )
        assert (text, problems) == ("postgresql://u:s3@h:5432/db", [])

    def test_default_when_unset(self) -> None:
        """`${VAR:-default}` falls back to the default when the variable is unset."""
        assert substitute("${NOPE:-fallback}", {}) == ("fallback", [])

    def test_default_when_empty(self) -> None:
        """`${VAR:-default}` also falls back when the variable is set but empty."""
        assert substitute("${E:-fallback}", {"E": ""}) == ("fallback", [])

    def test_empty_default(self) -> None:
        """`${VAR:-}` resolves to an empty string when unset, without an error."""
        assert substitute("x${NOPE:-}y", {}) == ("xy", [])

    def test_set_value_wins_over_default(self) -> None:
        """A set variable wins over the default."""
        assert substitute("${A:-fallback}", {"A": "real"}) == ("real", [])

    def test_unset_without_default_is_a_problem(self) -> None:
        """An unset variable without default is reported by name."""
        _, problems = substitute("${MISSING_VAR}", {})
        assert problems == ["uses ${MISSING_VAR} but environment variable MISSING_VAR is not set"]

    def test_dollar_escape(self) -> None:
        """`$$` writes a literal dollar, so `$${A}` is not a reference."""
        assert substitute("pa$$word $${A}", {"A": "x"}) == ("pa$word ${A}", [])

    def test_malformed_reference(self) -> None:
        """An unclosed `${` is reported instead of being kept silently."""
        _, problems = substitute("${oops", {})
        assert len(problems) == 1 and "malformed" in problems[0]


class TestEnvInConfig:
    def test_resolved_everywhere(self, load_text: LoadText) -> None:
        """Strings in every section, lists included, are resolved from the given environment."""
        env = {
            "ADMIN": "adm-0123456789abcdef",
            "PW": "pw",
            "KEY": "sk-from-env",
            "TOK": "tok-env-0123456789",
        }
        config = load_text(
            _config(
                admin="${ADMIN}",
                url="postgresql://u:${PW}@127.0.0.1:5432/db",
                key="${KEY}",
                token="prefix-${TOK}",
            ),
            env,
        )
        assert config.server.admin_token == "adm-0123456789abcdef"
        assert config.database.url == "postgresql://u:pw@127.0.0.1:5432/db"
        assert config.providers["p"].keys == ("sk-from-env",)
        assert (
            config.providers["p"].access_control.gateway_access_token == "prefix-tok-env-0123456789"
        )

    def test_numbers_from_variables(self, load_text: LoadText) -> None:
        """A number written as `${VAR:-default}` is accepted for a numeric option."""
        config = load_text('server: {port: "${PORT:-8080}"}\nproviders: {}', {"PORT": "9090"})
        assert config.server.port == 9090

    def test_unset_names_variable_and_path(self, problems_of: Problems) -> None:
        """An unset variable is an error naming the variable and the YAML path with its line."""
        problems = problems_of(_config(token="${GATEWAY_TOK}"))
        assert problems == [
            "providers.p.access_control.gateway_access_token (line 11): "
            "uses ${GATEWAY_TOK} but environment variable GATEWAY_TOK is not set"
        ]

    def test_every_unset_variable_reported(self, problems_of: Problems) -> None:
        """Several unset variables are all reported in one error."""
        problems = problems_of(_config(admin="${A1}", key="${K1}", token="${T1}"))
        assert [p.split(":")[0] for p in problems] == [
            "server.admin_token (line 3)",
            "providers.p.keys[0] (line 9)",
            "providers.p.access_control.gateway_access_token (line 11)",
        ]

    @pytest.mark.parametrize("env", [None, {}])
    def test_os_environ_used_by_default(
        self, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None
    ) -> None:
        """Without an explicit environment the process environment is used."""
        monkeypatch.setenv("LLMGW_TEST_TOKEN", "tok-from-process-0123")
        path = write_config(_config(token="${LLMGW_TEST_TOKEN:-none-0123456789abcdef}"))
        config = load_config(path, env=env)
        expected = "tok-from-process-0123" if env is None else "none-0123456789abcdef"
        assert config.providers["p"].access_control.gateway_access_token == expected


class TestReadOnlyLoad:
    def test_an_unset_client_token_leaves_the_token_empty(self, write_config: WriteConfig) -> None:
        """Read-only, a client token whose variable is unset loads, empty (selecting nothing)."""
        path = write_config(_config(token="${GATEWAY_TOK}"))
        config = load_config(path, env={}, read_only=True)
        assert config.providers["p"].access_control.gateway_access_token == ""

    def test_a_partly_unset_client_token_is_wholly_empty(self, write_config: WriteConfig) -> None:
        """A token with an unset variable inside a longer text is not kept in part either."""
        path = write_config(_config(token="tok-${GATEWAY_TOK}-0123456789"))
        config = load_config(path, env={}, read_only=True)
        assert config.providers["p"].access_control.gateway_access_token == ""

    def test_set_client_tokens_still_resolve(self, write_config: WriteConfig) -> None:
        """A client token whose variable is set is read as in a full load."""
        path = write_config(_config(token="${GATEWAY_TOK}"))
        config = load_config(path, env={"GATEWAY_TOK": "tok-env-0123456789"}, read_only=True)
        assert config.providers["p"].access_control.gateway_access_token == "tok-env-0123456789"

    def test_everything_else_is_validated_as_before(self, write_config: WriteConfig) -> None:
        """Unset admin token and key variables, a short client token: still errors, read-only."""
        path = write_config(_config(admin="${A1}", key="${K1}", token="short"))
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={}, read_only=True)
        assert [p.split(":")[0] for p in caught.value.problems] == [
            "server.admin_token (line 3)",
            "providers.p.keys[0] (line 9)",
            "providers.p.access_control.gateway_access_token (line 11)",
        ]

    def test_a_malformed_reference_in_a_client_token_is_still_an_error(
        self, write_config: WriteConfig
    ) -> None:
        """Only an unset variable is tolerated, not a broken reference."""
        path = write_config(_config(token="${GATEWAY_TOK} ${oops"))
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={}, read_only=True)
        assert any("malformed" in p for p in caught.value.problems)

    def test_a_full_load_still_requires_it(self, problems_of: Problems) -> None:
        """Without read_only the unset client token is the error it always was."""
        assert problems_of(_config(token="${GATEWAY_TOK}")) == [
            "providers.p.access_control.gateway_access_token (line 11): "
            "uses ${GATEWAY_TOK} but environment variable GATEWAY_TOK is not set"
        ]
