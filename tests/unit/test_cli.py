"""The click CLI through CliRunner: config create, config check, serve and status refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from llmgateway.cli.main import main
from llmgateway.config.loader import load_config

ENV = {"OPENAI_MAIN_TOKEN": "tok-openai-0123456789", "CLAUDE_TOKEN": "tok-claude-0123456789"}

# A hand-written file in an unusual style: 4-space indents, flow maps, odd quoting,
# comments everywhere, a section after `providers` and no final newline.
HANDWRITTEN = """\
# My gateway -- keep this header!
logging:   {level: 'debug',  format: json}   # odd spacing kept

providers:
    # the production instance
    openai-main:
        provider_type: 'openai_like'
        api_base_url: https://api.openai.com   # no quotes
        access_control:
            gateway_access_token: "${OPENAI_MAIN_TOKEN}"
        # trailing comment inside the last provider
        models:
          gpt-4o-mini: {}

# --- database below ---
database:
  url: "sqlite:///data/x.db"      # comment
server: {port: 8080}"""


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner working in an empty temporary directory with a clean environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMGW_CONFIG", raising=False)
    return CliRunner()


def run(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> Result:
    """Invoke the CLI and return its result (stdout and stderr kept apart)."""
    return runner.invoke(main, list(args), env=env, catch_exceptions=False)


def inserted_block(before: str, after: str) -> str:
    """The text `after` adds to `before`, asserting nothing else changed byte for byte."""
    prefix = 0
    while prefix < min(len(before), len(after)) and before[prefix] == after[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < len(before) - prefix
        and suffix < len(after) - prefix
        and before[-1 - suffix] == after[-1 - suffix]
    ):
        suffix += 1
    assert prefix + suffix == len(before), "existing text changed outside the new section"
    return after[prefix : len(after) - suffix]


class TestConfigCreate:
    def test_creates_missing_file(self, runner: CliRunner, tmp_path: Path) -> None:
        """A missing file is created with the base sections, the provider and its keys folder."""
        result = run(
            runner, "config", "create", "openai_like:openai-main", "--config", "conf/p.yaml"
        )
        assert result.exit_code == 0, result.output
        text = (tmp_path / "conf" / "p.yaml").read_text()
        for section in ("server", "database", "keeper", "logging", "providers"):
            assert re.search(rf"^{section}:( +#.*)?$", text, re.MULTILINE), section
        assert (tmp_path / "keys" / "openai-main").is_dir()
        assert "keys/openai-main/*.txt" in result.output
        assert "OPENAI_MAIN_TOKEN" in result.output and "config check" in result.output
        config = load_config(tmp_path / "conf" / "p.yaml", env=ENV)
        assert (
            config.providers["openai-main"].access_control.gateway_access_token
            == ENV["OPENAI_MAIN_TOKEN"]
        )

    def test_keeps_existing_text_byte_for_byte(self, runner: CliRunner, tmp_path: Path) -> None:
        """Adding a provider changes nothing outside the new section: comments, order, style."""
        path = tmp_path / "p.yaml"
        path.write_text(HANDWRITTEN)
        result = run(runner, "config", "create", "anthropic:claude", "--config", str(path))
        assert result.exit_code == 0, result.output
        block = inserted_block(HANDWRITTEN, path.read_text())
        assert "    claude:  " in block and 'provider_type: "anthropic"' in block
        assert "database" not in block and "openai-main" not in block
        config = load_config(path, env=ENV)
        assert list(config.providers) == ["openai-main", "claude"]
        assert config.logging.format == "json" and config.server.port == 8080

    def test_matches_existing_indentation(self, runner: CliRunner, tmp_path: Path) -> None:
        """The new section uses the indentation of the existing providers."""
        path = tmp_path / "p.yaml"
        path.write_text(HANDWRITTEN)
        run(runner, "config", "create", "gemini:gem", "--config", str(path))
        assert "\n    gem:" in path.read_text()
        assert '\n        provider_type: "gemini"' in path.read_text()

    def test_keeps_crlf_files(self, runner: CliRunner, tmp_path: Path) -> None:
        """A file with Windows line endings keeps them, in the new section too."""
        path = tmp_path / "p.yaml"
        original = "# crlf\r\nproviders:\r\n  a:\r\n    provider_type: gemini\r\n"
        path.write_bytes(original.encode())
        assert run(runner, "config", "create", "gemini:b", "--config", str(path)).exit_code == 0
        data = path.read_bytes().decode()
        assert data.startswith(original)
        assert "\n" not in data.replace("\r\n", "")

    @pytest.mark.parametrize(
        "original",
        [
            "# only a comment\nserver:\n  port: 8080\n",
            "server: {port: 8080}\nproviders: {}   # none yet\nkeeper: {enabled: false}\n",
            "server: {port: 8080}\nproviders:\n# nothing here yet\nkeeper: {enabled: false}\n",
            "",
        ],
        ids=["no-providers-key", "empty-flow", "null", "empty-file"],
    )
    def test_other_shapes(self, runner: CliRunner, tmp_path: Path, original: str) -> None:
        """Files without providers, with `providers: {}` or `providers:` or empty get the section."""
        path = tmp_path / "p.yaml"
        path.write_text(original)
        result = run(runner, "config", "create", "openai_like:openai-main", "--config", str(path))
        assert result.exit_code == 0, result.output
        text = path.read_text()
        config = load_config(path, env=ENV)
        assert list(config.providers) == ["openai-main"]
        for line in original.splitlines():
            if "providers" not in line:
                assert line in text
        if "8080" in original:
            assert config.server.port == 8080

    def test_refuses_existing_name(self, runner: CliRunner, tmp_path: Path) -> None:
        """An existing instance name is refused with exit 1 and the file is untouched."""
        path = tmp_path / "p.yaml"
        path.write_text(HANDWRITTEN)
        result = run(runner, "config", "create", "gemini:openai-main", "--config", str(path))
        assert result.exit_code == 1
        assert "'openai-main' already exists" in result.output
        assert path.read_text() == HANDWRITTEN

    def test_refuses_unknown_type(self, runner: CliRunner, tmp_path: Path) -> None:
        """An unknown type is refused with exit 1 and a message naming the valid types."""
        path = tmp_path / "p.yaml"
        path.write_text(HANDWRITTEN)
        result = run(runner, "config", "create", "mistral:m", "--config", str(path))
        assert result.exit_code == 1
        assert "unknown provider type 'mistral'" in result.output
        assert "openai_like, anthropic, gemini" in result.output
        assert path.read_text() == HANDWRITTEN
        assert not (tmp_path / "keys").exists()

    @pytest.mark.parametrize("spec", ["gemini:Big", "gemini:-x", "gemini:", "gemini:a b"])
    def test_refuses_bad_name(self, runner: CliRunner, spec: str) -> None:
        """An invalid instance name is refused with exit 1 and the naming rule."""
        result = run(runner, "config", "create", spec)
        assert result.exit_code == 1
        assert "invalid instance name" in result.output
        assert not Path("config/providers.yaml").exists()

    def test_refuses_missing_colon(self, runner: CliRunner) -> None:
        """A spec without `:` is refused with exit 1 and an example."""
        result = run(runner, "config", "create", "gemini")
        assert result.exit_code == 1
        assert (
            "<type>:<name>" in result.output and "openai_like, anthropic, gemini" in result.output
        )

    def test_refuses_broken_yaml(self, runner: CliRunner, tmp_path: Path) -> None:
        """A file that is not valid YAML is left alone: a configuration error, exit 2."""
        path = tmp_path / "p.yaml"
        path.write_text("providers: [\n")
        result = run(runner, "config", "create", "gemini:g", "--config", str(path))
        assert result.exit_code == 2 and "invalid YAML" in result.output
        assert path.read_text() == "providers: [\n"

    @pytest.mark.parametrize("text", ["- a list\n", "providers: [a, b]\n"])
    def test_an_unusable_file_is_a_configuration_error(
        self, runner: CliRunner, tmp_path: Path, text: str
    ) -> None:
        """A file that is no configuration (not a mapping where one belongs) exits 2, untouched."""
        path = tmp_path / "p.yaml"
        path.write_text(text)
        result = run(runner, "config", "create", "gemini:g", "--config", str(path))
        assert result.exit_code == 2 and "is not a mapping" in result.output
        assert path.read_text() == text

    def test_default_path_and_environment(self, runner: CliRunner, tmp_path: Path) -> None:
        """Without --config the file is config/providers.yaml, or $LLMGW_CONFIG when set."""
        assert run(runner, "config", "create", "gemini:a").exit_code == 0
        assert (tmp_path / "config" / "providers.yaml").is_file()
        env = {"LLMGW_CONFIG": str(tmp_path / "other.yaml")}
        assert run(runner, "config", "create", "gemini:b", env=env).exit_code == 0
        assert "b:" in (tmp_path / "other.yaml").read_text()
        assert "\n  b:" not in (tmp_path / "config" / "providers.yaml").read_text()


class TestConfigCheck:
    def test_ok_summary(self, runner: CliRunner, tmp_path: Path) -> None:
        """A valid file prints OK with the instance count and exits 0."""
        path = tmp_path / "p.yaml"
        path.write_text(HANDWRITTEN)
        result = run(runner, "config", "check", "--config", str(path), env=ENV)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"OK {path}: 1 provider instance (1 enabled)")
        assert "openai-main: openai_like, models: gpt-4o-mini" in result.output

    def test_every_problem_printed(self, runner: CliRunner, tmp_path: Path) -> None:
        """An invalid file prints every problem with its path and exits 2."""
        path = tmp_path / "p.yaml"
        path.write_text("server: {port: 0, hots: x}\nlogging: {level: loud}\n")
        result = run(runner, "config", "check", "--config", str(path))
        assert result.exit_code == 2
        assert "3 problems found" in result.output
        for fragment in ("server.port (line 1)", "server.hots (line 1)", "logging.level (line 2)"):
            assert fragment in result.output

    def test_unset_variable(self, runner: CliRunner, tmp_path: Path) -> None:
        """An unset token variable fails the check, naming the variable."""
        path = tmp_path / "p.yaml"
        path.write_text(HANDWRITTEN)
        result = run(runner, "config", "check", "--config", str(path))
        assert result.exit_code == 2 and "OPENAI_MAIN_TOKEN is not set" in result.output

    def test_missing_file(self, runner: CliRunner) -> None:
        """A missing file exits 2 and suggests `config create`."""
        result = run(runner, "config", "check")
        assert result.exit_code == 2
        assert (
            "config/providers.yaml" in result.output and "llmgateway config create" in result.output
        )

    def test_created_file_checks_clean(self, runner: CliRunner) -> None:
        """A file made by `config create` passes `config check` once the token is set."""
        for spec in ("openai_like:openai-main", "anthropic:claude"):
            assert run(runner, "config", "create", spec).exit_code == 0
        result = run(runner, "config", "check", env=ENV)
        assert result.exit_code == 0 and "2 provider instances" in result.output
        assert "warning" not in result.output

    def test_a_duplicate_key_shows_where_not_the_values(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """A token written twice is reported by line and column; neither value is printed."""
        path = tmp_path / "p.yaml"
        path.write_text(
            "server:\n"
            '  admin_token: "first-admin-secret-0123456789"\n'
            '  admin_token: "second-admin-secret-0123456789"\n'
            "providers:\n"
            "  p:\n"
            "    provider_type: openai_like\n"
            '    keys: ["sk-proj-inline-secret-0123456789"]\n'
            '    access_control: {gateway_access_token: "gw-secret-0123456789abcdef"}\n'
        )
        result = run(runner, "config", "check", "--config", str(path))
        assert result.exit_code == 2
        assert "line 3, column 3" in result.output and "written twice" in result.output
        for secret in ("first-admin", "second-admin", "inline-secret", "gw-secret"):
            assert secret not in result.output

    def test_a_syntax_error_shows_no_quoted_value(self, runner: CliRunner, tmp_path: Path) -> None:
        """A scanner error's quoted fragment of the file is left out of the message."""
        path = tmp_path / "p.yaml"
        path.write_text('server: {admin_token: "secret-with-bad-escape-\\q-0123456789"}\n')
        result = run(runner, "config", "check", "--config", str(path))
        assert result.exit_code == 2 and "invalid YAML (line 1" in result.output
        assert "secret-with" not in result.output and "'q'" not in result.output

    def test_credentials_in_api_base_url_are_refused_without_being_shown(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """user:password@ in api_base_url fails the check clearly; the password is not printed."""
        path = tmp_path / "p.yaml"
        path.write_text(
            HANDWRITTEN.replace(
                "https://api.openai.com", "https://admin:hunter2-pass@api.openai.com/v1"
            )
        )
        result = run(runner, "config", "check", "--config", str(path), env=ENV)
        assert result.exit_code == 2
        assert "providers.openai-main.api_base_url" in result.output
        assert "must not contain credentials (user:password@)" in result.output
        assert "https://***@api.openai.com/v1" in result.output
        assert "hunter2" not in result.output and "admin:" not in result.output

    @pytest.mark.parametrize(
        ("token_env", "admin", "path"),
        [
            ("tok-short-12345", "", "providers.openai-main.access_control.gateway_access_token"),
            ("tok-openai-0123456789", "admin-short", "server.admin_token"),
        ],
    )
    def test_tokens_shorter_than_16_characters_are_refused(
        self, runner: CliRunner, tmp_path: Path, token_env: str, admin: str, path: str
    ) -> None:
        """A guessable gateway or admin token fails the check, naming its length, not its value."""
        file = tmp_path / "p.yaml"
        file.write_text(
            HANDWRITTEN.replace(
                "server: {port: 8080}", f'server: {{port: 8080, admin_token: "{admin}"}}'
            )
        )
        result = run(
            runner, "config", "check", "--config", str(file), env={"OPENAI_MAIN_TOKEN": token_env}
        )
        assert result.exit_code == 2
        assert path in result.output and "too short" in result.output
        assert (admin or token_env) not in result.output

    def test_shows_the_old_worker_section_as_deprecated(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """A file still saying `worker:` passes the check with a warning naming both names."""
        path = tmp_path / "p.yaml"
        path.write_text(HANDWRITTEN.replace("server: {port: 8080}", "worker: {enabled: false}"))
        result = run(runner, "config", "check", "--config", str(path), env=ENV)
        assert result.exit_code == 0, result.output
        assert "warning: the `worker:` section is now called `keeper:`" in result.output

    def test_warns_about_missing_keys(self, runner: CliRunner, tmp_path: Path) -> None:
        """An instance without keys folder or inline keys passes with a warning naming the folder."""
        path = tmp_path / "p.yaml"
        path.write_text(HANDWRITTEN)
        result = run(runner, "config", "check", "--config", str(path), env=ENV)
        assert result.exit_code == 0
        assert (
            "warning: openai-main has no keys yet (keys/openai-main does not exist" in result.output
        )


class TestServeAndStatus:
    @pytest.mark.parametrize("command", [["serve"], ["status", "--json"], ["config", "check"]])
    def test_invalid_config_exits_2(
        self, runner: CliRunner, tmp_path: Path, command: list[str]
    ) -> None:
        """Every command prints the whole report and exits 2 on an invalid configuration."""
        path = tmp_path / "p.yaml"
        path.write_text("server: {port: 0}\nlogging: {level: loud}\n")
        result = run(runner, *command, "--config", str(path))
        assert result.exit_code == 2
        assert "server.port (line 1)" in result.output and "logging.level (line 2)" in result.output

    def test_help_lists_commands(self, runner: CliRunner) -> None:
        """The top-level help lists serve, status and config."""
        output = run(runner, "--help").output
        assert all(name in output for name in ("serve", "status", "config"))
