"""Text generation from the option declarations: `config create` and `config/example_full.yaml`.

Every option is written with its help text as comment (see `render_options`);
`config create` writes a commented provider section, and a base file when
there is none; `render_example` writes the full example.

The new section is inserted into the existing text at the end of the
`providers` block, located with ruamel.yaml's round-trip positions: every byte
outside the new section (comments, key order, quoting, spacing) stays as the
user wrote it. The result is parsed again before it is returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from ruamel.yaml.comments import CommentedMap

from llmgateway.config import defaults
from llmgateway.config.loader import parse_yaml
from llmgateway.config.options import UNSET, Leaf, ListOf, MapOf, Option, options_of, template
from llmgateway.config.schemas import AppConfig, ProviderConfig
from llmgateway.core.constants import ProviderType
from llmgateway.core.errors import ConfigError, ProviderNotAdded

_COMMENT_COLUMN: Final = 44
_ADMIN_TOKEN_FROM_ENV: Final = "${LLMGW_ADMIN_TOKEN:-}"
_ENCRYPTION_KEY_FROM_ENV: Final = "${LLMGW_ENCRYPTION_KEY:-}"
_POLICIES: Final = ("timeouts", "health_policy", "gateway_policy")
"""The provider sections `config create` writes commented out, with their defaults."""

_EXAMPLE_HEADER: Final = """\
# llmgateway: every option, with its default value unless its comment says otherwise.
# Generated from the option declarations in llmgateway/config/schemas.py: `make example`.
#
# Strings may use ${VAR} (an unset variable is an error) or ${VAR:-default};
# write $$ for a literal "$". Durations are seconds as a number, or a string
# with a unit: "250ms", "90s", "30m", "24h", "10d". Relative paths (keys_path,
# the SQLite file) are resolved against the working directory.
# Check a file with: llmgateway config check --config <file>
"""
_EXAMPLE_MODELS: Final = {
    "gpt-4o-mini": {},
    "gpt-4.1-mini": {
        "probe_path": "/v1/chat/completions",
        "test_payload": {
            "model": "gpt-4.1-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
        },
    },
}
_EXAMPLE_RULE: Final = {
    "status_code": 400,
    "error_path": "error.code",
    "match_pattern": "insufficient_quota",
    "map_to": "no_quota",
    "priority": 10,
    "description": "quota exhausted reported as a bad request",
}
_EXAMPLE_TAIL: Final = """\

  claude:                                   # everything not written takes its default
    provider_type: "anthropic"
    access_control:
      gateway_access_token: "${CLAUDE_TOKEN}"

  gemini:
    provider_type: "gemini"
    shared_key_status: true                 # one status per key for all its models
    models:
      gemini-2.0-flash: {}
      gemini-2.5-flash: {}
    access_control:
      gateway_access_token: "${GEMINI_TOKEN}"
"""


def token_variable(name: str) -> str:
    """The environment variable suggested for an instance's gateway token (`OPENAI_MAIN_TOKEN`)."""
    variable = re.sub(r"[^A-Z0-9_]", "_", name.upper()) + "_TOKEN"
    return variable if not variable[0].isdigit() else f"LLMGW_{variable}"


def scalar(value: Any) -> str:
    """`value` written as a YAML flow scalar or flow collection."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as YAML")


def _line(indent: int, text: str, comment: str = "", *, hash_at: int | None = None) -> str:
    """One line at `indent`; commented out with '#' at column `hash_at` when given."""
    if hash_at is None:
        body = " " * indent + text
    else:
        body = " " * hash_at + "# " + " " * (indent - hash_at) + text
    if comment:
        body = body.ljust(_COMMENT_COLUMN - 1) + " # " + comment
    return body.rstrip() + "\n"


def _comment(declared: Option, value: Any, default: Any) -> str:
    """The option's help, plus its default when a value other than the default is written."""
    if not isinstance(declared.node, Leaf) or default in (UNSET, None) or value == default:
        return declared.help
    note = f"default: {scalar(default)}"
    return f"{declared.help}; {note}" if declared.help else note


def render_options(
    kind: type,
    values: Mapping[str, Any],
    defaults: Mapping[str, Any],
    indent: int,
    step: int = 2,
    *,
    hash_at: int | None = None,
) -> str:
    """The options of `kind` given in `values` as block YAML, each with its help as comment.

    `defaults` are the values a comment names when another value is written;
    with `hash_at`, every line is commented out at that column.
    """
    rows = _rows(kind, values, defaults, indent, step)
    return "".join(_line(column, text, note, hash_at=hash_at) for (column, text), note in rows)


Row = tuple[tuple[int, str], str]
"""One line to write: (column, text) and its comment."""


def _option(
    name: str, declared: Option, value: Any, default: Any, indent: int, step: int
) -> list[Row]:
    """The lines of one option: ((column, text), comment) each."""
    node = declared.node
    head = ((indent, f"{name}:"), declared.help)
    entries: list[Row] = []
    if isinstance(node, type):
        inner = default if isinstance(default, dict) else {}
        return [head, *_rows(node, value, inner, indent + step, step)]
    if isinstance(node, MapOf) and isinstance(node.value, type) and value:
        for key, entry in value.items():
            if not entry:
                entries.append(((indent + step, f"{key}: {{}}"), ""))
                continue
            entries.append(((indent + step, f"{key}:"), ""))
            entries += _rows(node.value, entry, template(node.value), indent + 2 * step, step)
        return [head, *entries]
    if isinstance(node, ListOf) and isinstance(node.item, type) and value:
        for entry in value:
            rows = _rows(node.item, entry, template(node.item), indent + step + 2, step)
            (column, text), comment = rows[0]
            entries += [((column - 2, "- " + text), comment), *rows[1:]]
        return [head, *entries]
    return [((indent, f"{name}: {scalar(value)}"), _comment(declared, value, default))]


def _rows(
    kind: type, values: Mapping[str, Any], defaults: Mapping[str, Any], indent: int, step: int
) -> list[Row]:
    rows: list[Row] = []
    for name, declared in options_of(kind).items():
        if name in values:
            rows += _option(name, declared, values[name], defaults.get(name, UNSET), indent, step)
    return rows


def _provider_values(provider_type: ProviderType, name: str) -> dict[str, Any]:
    """What a new instance writes: its type, the defaults, its default model and token."""
    values = defaults.provider_template(provider_type, name)
    values["provider_type"] = provider_type.value
    values["models"] = {values["default_model"]: {}}
    values["access_control"]["gateway_access_token"] = f"${{{token_variable(name)}}}"
    return values


def render_provider(provider_type: ProviderType, name: str, indent: int = 2, step: int = 2) -> str:
    """A commented provider section for `name` of `provider_type` at column `indent`.

    Nested levels are `step` further in (the file's own indentation). The
    settings a user must look at are written out; the policies are shown
    commented out with their defaults, ready to uncomment.
    """
    values = _provider_values(provider_type, name)
    base = defaults.provider_template(provider_type, name)
    written = {k: v for k, v in values.items() if k not in _POLICIES}
    policies = {k: v for k, v in values.items() if k in _POLICIES}
    j = indent + step
    out = _line(indent, f"{name}:", _providers_help())
    out += render_options(ProviderConfig, written, base, j, step)
    out += _line(
        j, "# Defaults below; uncomment a line to change it. Durations: 250ms, 90s, 30m, 24h, 10d."
    )
    return out + render_options(ProviderConfig, policies, base, j, step, hash_at=j)


def _providers_help() -> str:
    return options_of(AppConfig)["providers"].help


def _base_sections() -> str:
    """Every section of the file but `providers`, each option at its default with its help."""
    values = defaults.app_template()
    values["server"]["admin_token"] = _ADMIN_TOKEN_FROM_ENV
    values["database"]["encryption_key"] = _ENCRYPTION_KEY_FROM_ENV
    base = defaults.app_template()
    out = ""
    for name, declared in options_of(AppConfig).items():
        if isinstance(declared.node, type):
            out += "\n" + render_options(AppConfig, {name: values[name]}, base, 0)
    return out


def _providers_line(*, with_help: bool) -> str:
    return "\n" + _line(0, "providers:", _providers_help() if with_help else "")


def render_base_file(provider_section: str = "") -> str:
    """A new configuration file: every base section with its defaults, then `providers:`."""
    out = "# llmgateway configuration. Check it with `llmgateway config check`.\n"
    out += "# Add a provider instance with `llmgateway config create <type>:<name>`.\n"
    # The help goes on the instance's line, which `config create` writes into any file.
    return out + _base_sections() + _providers_line(with_help=False) + provider_section


def render_example() -> str:
    """The text of `config/example_full.yaml`: every option, with its help and default."""
    values = _provider_values(ProviderType.OPENAI_LIKE, "openai-main")
    values["models"] = _EXAMPLE_MODELS
    values["gateway_policy"]["error_parsing"]["rules"] = [_EXAMPLE_RULE]
    base = defaults.provider_template(ProviderType.OPENAI_LIKE, "openai-main")
    out = _EXAMPLE_HEADER + _base_sections() + _providers_line(with_help=True)
    out += _line(2, "openai-main:")
    out += render_options(ProviderConfig, values, base, 4)
    return out + _EXAMPLE_TAIL


def add_provider(text: str, provider_type: ProviderType, name: str, source: str) -> str:
    """`text` with a new provider section appended to its `providers` block.

    Raises ConfigError when the file is not a usable configuration (invalid
    YAML, no mapping at the top or under `providers`), ProviderNotAdded when
    `name` already exists or the file's layout leaves no safe place for it.
    """
    data = parse_yaml(text, source)
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ConfigError(f"{source}: the top level is not a mapping; cannot add a provider")
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    providers = data.get("providers")
    if providers is not None and not isinstance(providers, CommentedMap):
        raise ConfigError(f"{source}: `providers` is not a mapping; cannot add a provider")
    if providers is not None and name in providers:
        raise ProviderNotAdded(f"{source}: provider instance {name!r} already exists")

    if "providers" not in data:
        gap = [newline] if lines and lines[-1].strip() else []
        at, section = len(lines), [
            *gap,
            "providers:" + newline,
            render_provider(provider_type, name),
        ]
    elif not providers:
        at = data.lc.key("providers")[0]
        match = re.match(
            r"(providers\s*:)\s*(?:\{\s*\}|null|~)?(\s*#.*)?\s*$", lines[at].rstrip("\r\n")
        )
        if match is None:
            raise ProviderNotAdded(
                f"{source}: cannot read the `providers:` line; add the section by hand"
            )
        lines[at] = match.group(1) + (match.group(2) or "") + newline
        at, section = at + 1, [render_provider(provider_type, name)]
    elif providers.fa.flow_style():
        raise ProviderNotAdded(
            f"{source}: `providers` is written in flow style {{...}}; add the section by hand"
        )
    else:
        indent, step = _indentation(providers)
        at = _end_of_providers(data, lines)
        gap = [newline] if lines[at - 1].strip() else []
        section = [*gap, render_provider(provider_type, name, indent, step)]
    if at == len(lines) and lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline  # the file had no final newline: the new text goes after it
    rendered = "".join(section)
    if newline != "\n":
        rendered = rendered.replace("\n", newline).replace("\r\r\n", "\r\n")
    result = "".join(lines[:at]) + rendered + "".join(lines[at:])
    _verify(result, data, provider_type, name, source)
    return result


def _indentation(providers: CommentedMap) -> tuple[int, int]:
    """The column of the instance names and the file's nesting step below them."""
    first = next(iter(providers))
    indent: int = providers.lc.key(first)[1]
    body = providers[first]
    if isinstance(body, CommentedMap) and body and not body.fa.flow_style():
        step = body.lc.key(next(iter(body)))[1] - indent
        if step > 0:
            return indent, step
    return indent, 2


def _end_of_providers(data: CommentedMap, lines: list[str]) -> int:
    """The line index after the providers block (before the comments of the next section)."""
    keys = list(data)
    start = data.lc.key("providers")[0]
    position = keys.index("providers")
    end = data.lc.key(keys[position + 1])[0] if position + 1 < len(keys) else len(lines)
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return end


def _verify(
    result: str, before: CommentedMap, provider_type: ProviderType, name: str, source: str
) -> None:
    after = parse_yaml(result, source)
    added = after.get("providers", {}) if isinstance(after, CommentedMap) else {}
    if (
        not isinstance(added, CommentedMap)
        or (added.get(name) or {}).get("provider_type") != provider_type.value
        or list(after) != list(before) + (["providers"] if "providers" not in before else [])
    ):
        raise ProviderNotAdded(
            f"{source}: the file's layout prevents a safe insertion; add the section by hand"
        )
