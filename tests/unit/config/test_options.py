"""Options declared once on the schema fields, and what is derived from them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from llmgateway.config import defaults
from llmgateway.config.options import (
    OPTION,
    UNSET,
    Leaf,
    ListOf,
    MapOf,
    Option,
    options_of,
)
from llmgateway.config.scaffold import render_example, scalar
from llmgateway.config.schemas import AppConfig, KeeperConfig, RetryPolicy, ServerConfig
from llmgateway.core.constants import ProviderType

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "config" / "example_full.yaml"

Declared = tuple[tuple[str, ...], Option, Any]
"""A dotted path (`*`: any entry of a map, `[]`: any item of a list), the option, its default."""


def declared(kind: type, prefix: tuple[str, ...] = (), overrides: Any = None) -> Iterator[Declared]:
    """Every option under `kind`, depth first, with the default that applies there."""
    for name, option in options_of(kind).items():
        path = (*prefix, name)
        default = (overrides or {}).get(name, option.default)
        yield path, option, default
        node = option.node
        if isinstance(node, type):
            yield from declared(node, path, option.overrides)
        elif isinstance(node, MapOf) and isinstance(node.value, type):
            yield from declared(node.value, (*path, "*"))
        elif isinstance(node, ListOf) and isinstance(node.item, type):
            yield from declared(node.item, (*path, "[]"))


Found = tuple[str, Any, str]
"""Where an option is written: the instance it is under ("" at top level), value, comment."""


def occurrences(
    node: Any, path: tuple[str, ...], lines: list[str], instance: str = ""
) -> list[Found]:
    """Every place the example writes the option at `path` (one per map entry or list item)."""
    head, rest = path[0], path[1:]
    if head == "[]":
        if not isinstance(node, CommentedSeq):
            return []
        return [hit for item in node for hit in occurrences(item, rest, lines, instance)]
    if not isinstance(node, CommentedMap):
        return []
    if head == "*":
        return [
            hit
            for key, value in node.items()
            for hit in occurrences(value, rest, lines, instance or str(key))
        ]
    if head not in node:
        return []
    if rest:
        return occurrences(node[head], rest, lines, instance)
    text = lines[node.lc.key(head)[0]]
    return [(instance, node[head], text.partition(" # ")[2])]


def test_the_example_file_is_generated_from_the_declarations() -> None:
    """config/example_full.yaml is exactly what the declarations render (`make example`)."""
    assert EXAMPLE.read_text(encoding="utf-8") == render_example()


@pytest.mark.parametrize(
    ("path", "option", "default"),
    [pytest.param(*each, id=".".join(each[0])) for each in declared(AppConfig)],
)
def test_the_example_writes_every_option_with_its_default_and_help(
    path: tuple[str, ...], option: Option, default: Any
) -> None:
    """Each declared option is in the example with its help, at its default or naming it."""
    text = EXAMPLE.read_text(encoding="utf-8")
    found = occurrences(YAML(typ="rt").load(text), path, text.splitlines())
    assert found, f"{'.'.join(path)} is not in {EXAMPLE.name}"

    def documented(instance: str, value: Any, comment: str) -> bool:
        if option.help not in comment:
            return False
        if not isinstance(option.node, Leaf) or default in (UNSET, None):
            return True
        expected = default.format(name=instance) if isinstance(default, str) else default
        parse = option.node.parse
        return f"default: {scalar(default)}" in comment or parse(value) == parse(expected)

    assert any(documented(*hit) for hit in found), found


def test_option_keeps_the_default_as_written_and_parses_it_for_the_field() -> None:
    """The field default is the parsed value; the metadata keeps "60s", its leaf and its help."""
    field = next(f for f in dataclasses.fields(KeeperConfig) if f.name == "keys_sync_interval")
    option = field.metadata[OPTION]
    assert field.default == 60.0
    assert (option.default, option.help) == ("60s", "re-read keys files")
    assert option.node.parse(option.default) == field.default


def test_a_section_may_declare_its_own_defaults() -> None:
    """retry.on_server_error differs from a RetryBudget's defaults, in the field and template."""
    assert RetryPolicy().on_server_error.attempts == 2
    assert RetryPolicy().on_key_error.attempts == 3
    retry = defaults.provider_template(ProviderType.GEMINI, "g")["gateway_policy"]["retry"]
    assert retry["on_server_error"] == {"attempts": 2, "backoff": "0.5s", "backoff_factor": 2.0}


def test_the_templates_are_the_declared_defaults_as_written() -> None:
    """The loader's default tree holds the defaults as a user writes them ("30s", not 30.0)."""
    template = defaults.app_template()
    assert template["server"]["shutdown_timeout"] == "30s"
    assert set(template) == {"server", "database", "keeper", "logging", "providers"}
    provider = defaults.provider_template(ProviderType.ANTHROPIC, "claude")
    assert provider["keys_path"] == "keys/claude/"
    assert provider["api_base_url"] == "https://api.anthropic.com"
    assert "provider_type" not in provider
    assert ServerConfig().shutdown_timeout == 30.0
