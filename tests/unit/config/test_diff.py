"""The difference between two loaded configurations: what a reload would change."""

from __future__ import annotations

from llmgateway.config.diff import RESTART_HINT, diff_configs
from tests.unit.config.conftest import LoadText

BASE = """
server:
  admin_token: "adm-0123456789abcdef"
  port: 55300
database:
  url: "sqlite:///a.db"
logging:
  level: info
providers:
  a:
    provider_type: openai_like
    keys: ["sk-a-0123456789abcdef"]
    models: ["gpt-4o-mini", "gpt-4.1"]
    access_control: {gateway_access_token: "tok-a-0123456789abcdef"}
  b:
    provider_type: anthropic
    keys: ["sk-b-0123456789abcdef"]
    access_control: {gateway_access_token: "tok-b-0123456789abcdef"}
"""

C = """
  c:
    provider_type: gemini
    keys: ["g-c-0123456789abcdef"]
    access_control: {gateway_access_token: "tok-c-0123456789abcdef"}
"""


def test_the_same_file_makes_no_difference(load_text: LoadText) -> None:
    """Loaded twice, one file gives an empty diff."""
    diff = diff_configs(load_text(BASE), load_text(BASE))
    assert diff.empty
    assert (diff.added, diff.removed, diff.changed, diff.settings, diff.errors) == (
        (),
        (),
        (),
        (),
        (),
    )


def test_instances_added_and_removed(load_text: LoadText) -> None:
    """An instance only in the new file is added; one only in the old file is removed."""
    new = BASE.replace(
        """  b:
    provider_type: anthropic
    keys: ["sk-b-0123456789abcdef"]
    access_control: {gateway_access_token: "tok-b-0123456789abcdef"}
""",
        C.lstrip("\n"),
    )
    diff = diff_configs(load_text(BASE), load_text(new))
    assert (diff.added, diff.removed, diff.changed) == (("c",), ("b",), ())
    assert not diff.empty and diff.errors == ()


def test_any_option_of_an_instance_changes_it(load_text: LoadText) -> None:
    """Keys, models, token, rules, policies, `enabled`: each makes the instance changed, by path."""
    new = (
        BASE.replace('["sk-a-0123456789abcdef"]', '["sk-a-0123456789abcdef", "sk-a2-0123456789ab"]')
        .replace('"gpt-4.1"]', '"gpt-4.1", "o3"]')
        .replace("tok-b-0123456789abcdef", "tok-b2-0123456789abcdef")
        .replace(
            "    provider_type: anthropic\n",
            "    provider_type: anthropic\n    enabled: false\n"
            "    gateway_policy:\n"
            "      rate_limit_cooldown: 5s\n"
            "      error_parsing:\n"
            "        rules:\n"
            "          - {status_code: 400, error_path: error.type,"
            " match_pattern: quota, map_to: no_quota}\n",
        )
    )
    diff = diff_configs(load_text(BASE), load_text(new))
    assert diff.changed == ("a", "b")
    assert diff.changes == {
        "a": ("keys", "models.o3"),
        "b": (
            "enabled",
            "access_control.gateway_access_token",
            "gateway_policy.error_parsing.rules",
            "gateway_policy.rate_limit_cooldown",
        ),
    }
    assert (diff.added, diff.removed, diff.settings, diff.errors) == ((), (), (), ())


def test_a_model_option_is_named_with_its_model(load_text: LoadText) -> None:
    """A probe override of one model is a change of that model's option, quoted as in YAML."""
    new = BASE.replace(
        'models: ["gpt-4o-mini", "gpt-4.1"]',
        'models: {"gpt-4o-mini": {}, "gpt-4.1": {probe_path: "/v1/responses"}}',
    )
    diff = diff_configs(load_text(BASE), load_text(new))
    assert diff.changes == {"a": ('models["gpt-4.1"].probe_path',)}


def test_live_settings_are_listed_without_errors(load_text: LoadText) -> None:
    """Admin token, limits, keeper and logging options change live: settings, no error."""
    new = BASE.replace("adm-0123456789abcdef", "adm-fedcba9876543210").replace(
        "port: 55300", "port: 55300\n  max_body_mb: 8\nkeeper:\n  check_interval: 1s"
    )
    diff = diff_configs(load_text(BASE), load_text(new))
    assert diff.settings == ("server.admin_token", "server.max_body_mb", "keeper.check_interval")
    assert diff.errors == () and not diff.empty


def test_options_fixed_while_serving_are_errors(load_text: LoadText) -> None:
    """Port, workers, shutdown grace, database, log pipeline need a restart: each is an error."""
    new = (
        BASE.replace("port: 55300", "port: 55301\n  workers: 2\n  shutdown_timeout: 5s")
        .replace("sqlite:///a.db", "sqlite:///b.db")
        .replace("level: info", "level: debug\nkeeper:\n  enabled: false")
    )
    diff = diff_configs(load_text(BASE), load_text(new))
    assert diff.errors == (
        f"server.port {RESTART_HINT}",
        f"server.workers {RESTART_HINT}",
        f"server.shutdown_timeout {RESTART_HINT}",
        f"database.url {RESTART_HINT}",
        f"keeper.enabled {RESTART_HINT}",
        f"logging.level {RESTART_HINT}",
    )


def test_no_value_is_ever_shown(load_text: LoadText) -> None:
    """Changed keys, tokens and the database address appear by path only, never by value."""
    new = (
        BASE.replace("sk-a-0123456789abcdef", "sk-new-0123456789abcdef")
        .replace("tok-a-0123456789abcdef", "tok-new-0123456789abcdef")
        .replace("adm-0123456789abcdef", "adm-new-0123456789abcdef")
        .replace("sqlite:///a.db", "postgresql://u:secret-pw@127.0.0.1:5432/db")
    )
    diff = diff_configs(load_text(BASE), load_text(new))
    text = repr(diff)
    for value in ("0123456789abcdef", "secret-pw", "sk-", "tok-", "adm-"):
        assert value not in text
