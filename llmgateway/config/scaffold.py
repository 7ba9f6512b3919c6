"""Text generation for `llmgateway config create`: a commented provider section, a base file.

The new section is inserted into the existing text at the end of the
`providers` block, located with ruamel.yaml's round-trip positions: every byte
outside the new section (comments, key order, quoting, spacing) stays as the
user wrote it. The result is parsed again before it is returned.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from ruamel.yaml.comments import CommentedMap

from llmgateway.config import defaults
from llmgateway.config.loader import parse_yaml
from llmgateway.core.constants import ProviderType
from llmgateway.core.errors import ConfigError

_COMMENT_COLUMN: Final = 44
_RULE_EXAMPLE: Final = (
    'status_code: 400, error_path: "error.code", match_pattern: "insufficient_quota", '
    'map_to: "no_quota", priority: 10, description: "quota exhausted"'
)

_COMMENTS: Final[dict[str, str]] = {
    "server.host": "listen address",
    "server.port": "listen port",
    "server.admin_token": "guards /-/*, /metrics; unset: loopback clients only",
    "server.max_body_mb": "larger request bodies get 413",
    "server.max_event_subscribers": "open /-/events streams at most (then 503)",
    "server.auth_failures_per_minute": "wrong tokens per client address, then 429 for 1m",
    "server.workers": "worker processes sharing the port",
    "server.shutdown_timeout": "grace period for in-flight requests on stop",
    "database.url": "embedded default; or postgresql://user:pass@host:5432/db",
    "database.pool_min_size": "PostgreSQL connection pool bounds",
    "database.pool_max_size": "",
    "worker.enabled": "the keeper: background probing of every key",
    "worker.max_concurrent_probes": "probes in flight at once, all instances",
    "worker.max_concurrent_probes_per_instance": "probes in flight at once, per instance",
    "worker.keys_sync_interval": "re-read keys files",
    "worker.check_interval": "how often due keys are looked for",
    "worker.shutdown_timeout": "wait for running probes on stop",
    "worker.confirm_within": "a key error seen on traffic is probed within this",
    "worker.server_error_cooldown": "after 3 server errors in a row, traffic prefers other keys",
    "worker.incident_window": "many working keys failing alike within this: an incident",
    "logging.level": "debug | info | warning | error | critical",
    "logging.format": '"console" or "json"',
    "logging.summary_interval": "periodic pool summary line",
    "logging.access_log": "one line per proxied request",
}


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


def _block(
    indent: int, values: dict[str, Any], *, step: int = 2, hash_at: int | None = None
) -> str:
    """Nested mappings as block YAML; flat sub-mappings of scalars as flow mappings."""
    out = ""
    for key, value in values.items():
        nested = isinstance(value, dict) and any(isinstance(v, dict | list) for v in value.values())
        if nested:
            out += _line(indent, f"{key}:", hash_at=hash_at)
            out += _block(indent + step, value, step=step, hash_at=hash_at)
        else:
            out += _line(indent, f"{key}: {scalar(value)}", hash_at=hash_at)
    return out


def render_provider(provider_type: ProviderType, name: str, indent: int = 2, step: int = 2) -> str:
    """A commented provider section for `name` of `provider_type` at column `indent`.

    Nested levels are `step` further in (the file's own indentation).

    The settings a user must look at are written out; the policies are shown
    commented out with their defaults (from `defaults.py`), ready to uncomment.
    """
    t = defaults.provider_template(provider_type, name)
    i, j, k = indent, indent + step, indent + 2 * step
    types = " | ".join(p.value for p in ProviderType)
    out = _line(i, f"{name}:", "instance name: [a-z0-9][a-z0-9_-]*")
    out += _line(j, f"provider_type: {scalar(provider_type.value)}", types)
    out += _line(j, f"enabled: {scalar(t['enabled'])}")
    out += _line(j, f"api_base_url: {scalar(t['api_base_url'])}", "origin (+ optional prefix)")
    out += _line(
        j, f"keys_path: {scalar(t['keys_path'])}", "*.txt files, one key per line, '#' comments"
    )
    out += _line(j, "keys: []", "optional inline keys, may use ${VAR}")
    out += _line(
        j,
        f"default_model: {scalar(t['default_model'])}",
        "probed for shared keys; pool for unknown models",
    )
    out += _line(
        j,
        f"shared_key_status: {scalar(t['shared_key_status'])}",
        "true: one status per key for all models",
    )
    out += _line(j, "models:", "probed and served; each may set probe_path, test_payload")
    out += _line(k, f"{scalar(t['default_model'])}: {{}}")
    out += _line(j, "access_control:")
    out += _line(
        k,
        f'gateway_access_token: "${{{token_variable(name)}}}"',
        "clients send this, not a real key",
    )
    out += _line(
        j, "# Defaults below; uncomment a line to change it. Durations: 250ms, 90s, 30m, 24h, 10d."
    )
    out += _line(
        j,
        "timeouts:",
        "first_byte: until response headers; idle: gap between chunks",
        hash_at=j,
    )
    out += _block(k, t["timeouts"], step=step, hash_at=j)
    out += _line(j, "health_policy:", "when a key is checked again after each outcome", hash_at=j)
    out += _block(k, t["health_policy"], step=step, hash_at=j)
    policy = t["gateway_policy"]
    out += _line(j, "gateway_policy:", hash_at=j)
    out += _line(
        k,
        f"streaming_mode: {scalar(policy['streaming_mode'])}",
        "auto | disabled",
        hash_at=j,
    )
    out += _line(k, "fast_status_mapping: {}", 'e.g. {418: "no_quota"}, no body read', hash_at=j)
    out += _line(k, "error_parsing:", hash_at=j)
    out += _block(k + step, policy["error_parsing"], step=step, hash_at=j)
    out += _line(k + step, "# e.g. - {" + _RULE_EXAMPLE + "}", hash_at=j)
    out += _block(k, {"retry": policy["retry"]}, step=step, hash_at=j)
    out += _line(
        k,
        f"rate_limit_cooldown: {scalar(policy['rate_limit_cooldown'])}",
        "when no Retry-After is sent",
        hash_at=j,
    )
    return out


def render_base_file(provider_section: str = "") -> str:
    """A new configuration file: every base section with its defaults, then `providers:`."""
    template = defaults.app_template()
    template["server"]["admin_token"] = "${LLMGW_ADMIN_TOKEN:-}"
    out = "# llmgateway configuration. Check it with `llmgateway config check`.\n"
    out += "# Add a provider instance with `llmgateway config create <type>:<name>`.\n"
    for section in ("server", "database", "worker", "logging"):
        out += f"\n{section}:\n"
        for key, value in template[section].items():
            out += _line(2, f"{key}: {scalar(value)}", _COMMENTS.get(f"{section}.{key}", ""))
    return out + "\nproviders:\n" + provider_section


def add_provider(text: str, provider_type: ProviderType, name: str, source: str) -> str:
    """`text` with a new provider section appended to its `providers` block.

    Raises ConfigError when the YAML is invalid, `name` already exists, or the
    file's shape leaves no safe place to insert the section.
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
        raise ConfigError(f"{source}: provider instance {name!r} already exists")

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
            raise ConfigError(
                f"{source}: cannot read the `providers:` line; add the section by hand"
            )
        lines[at] = match.group(1) + (match.group(2) or "") + newline
        at, section = at + 1, [render_provider(provider_type, name)]
    elif providers.fa.flow_style():
        raise ConfigError(
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
        raise ConfigError(
            f"{source}: the file's layout prevents a safe insertion; add the section by hand"
        )
