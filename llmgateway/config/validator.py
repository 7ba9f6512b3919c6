"""Validation of the merged configuration tree, collecting every problem in one report.

`validate` walks the tree against `APP_SPEC`, turns each value into its typed
form (durations to seconds, enums to members) and records a `Problem` (YAML
path, line, what is wrong, what is allowed) for every mistake instead of
stopping at the first. Cross-field rules (unique tokens, default model among
the models) run afterwards on the typed tree.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from llmgateway.config import fields as f
from llmgateway.core.constants import ErrorReason, ProviderType, StreamingMode
from llmgateway.core.logs import FORMATS, LEVELS, mask_key

Path = tuple[str | int, ...]
"""A position in the YAML tree: mapping keys and sequence indices."""

MIN_TOKEN_LENGTH: Final = 16
"""Gateway and admin tokens shorter than this are refused (they could be guessed)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in the configuration: where, what, and what would be accepted."""

    path: Path
    message: str
    allowed: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = format_path(self.path) or "(top level)"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        text = f"{where}: {self.message}"
        return f"{text}; allowed: {self.allowed}" if self.allowed else text


def format_path(path: Path) -> str:
    """`providers.openai-main.models["gpt-4.1"].probe_path`-style text for a path."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif f.SIMPLE_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


@dataclass(frozen=True, slots=True)
class Leaf:
    """A scalar: `parse` returns the typed value or raises ValueError saying what is wrong."""

    parse: Callable[[Any], Any]
    allowed: str
    secret: bool = False


@dataclass(frozen=True, slots=True)
class Section:
    """A mapping with a fixed set of keys."""

    fields: Mapping[str, Node]
    required: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class MapOf:
    """A mapping of user-chosen keys (checked by `key`) to values of one shape."""

    value: Node
    key: Leaf | None = None


@dataclass(frozen=True, slots=True)
class ListOf:
    """A sequence of items of one shape."""

    item: Node


Node = Leaf | Section | MapOf | ListOf

STRING: Final = Leaf(f.string, "a string")
SECRET: Final = Leaf(f.string, "a string", secret=True)
BOOL: Final = Leaf(f.boolean, "true or false")
DURATION: Final = Leaf(f.duration(), f"a duration > 0: {f.DURATION_FORMS}")
DELAY: Final = Leaf(f.duration(allow_zero=True), f"a duration >= 0: {f.DURATION_FORMS}")
COUNT: Final = Leaf(f.integer(minimum=1), "an integer >= 1")


def _enum(values: list[str]) -> Leaf:
    return Leaf(f.choice(values), " | ".join(values))


_RULE: Final = Section(
    {
        "status_code": Leaf(f.integer(100, 599), "an HTTP status code (100-599)"),
        "error_path": Leaf(f.non_empty, 'a dot path into the JSON error body, e.g. "error.code"'),
        "match_pattern": Leaf(f.regex, "a Python regular expression"),
        "map_to": _enum([r.value for r in ErrorReason]),
        "priority": Leaf(f.integer(), "an integer (highest matching priority wins)"),
        "description": STRING,
    },
    required=frozenset({"status_code", "error_path", "match_pattern", "map_to"}),
)
_BUDGET: Final = Section(
    {
        "attempts": COUNT,
        "backoff": DELAY,
        "backoff_factor": Leaf(f.number(minimum=1.0), "a number >= 1"),
    }
)
_PROVIDER: Final = Section(
    {
        "provider_type": _enum([t.value for t in ProviderType]),
        "enabled": BOOL,
        "api_base_url": Leaf(f.http_url, "an http:// or https:// origin, optionally with a prefix"),
        "keys_path": Leaf(f.string, 'a directory of *.txt key files, or "" for none'),
        "keys": ListOf(Leaf(f.non_empty, "a non-empty key string", secret=True)),
        "default_model": Leaf(f.non_empty, "a model name"),
        "shared_key_status": BOOL,
        "models": MapOf(
            Section(
                {
                    "probe_path": Leaf(f.optional(f.url_path), 'a path starting with "/"'),
                    "test_payload": Leaf(f.optional(f.mapping), "a mapping (the JSON body)"),
                }
            ),
            key=Leaf(f.non_empty, "a model name"),
        ),
        "access_control": Section({"gateway_access_token": SECRET}),
        "timeouts": Section(
            {name: DURATION for name in ("connect", "first_byte", "idle", "total")}
        ),
        "health_policy": Section(
            {
                **{
                    name: DURATION
                    for name in (
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
                    )
                },
                "verification_attempts": COUNT,
                "verification_delay": DELAY,
            }
        ),
        "gateway_policy": Section(
            {
                "streaming_mode": _enum([m.value for m in StreamingMode]),
                "fast_status_mapping": MapOf(
                    _enum([r.value for r in ErrorReason]),
                    key=Leaf(f.integer(100, 599), "an HTTP status code (100-599)"),
                ),
                "error_parsing": Section({"enabled": BOOL, "rules": ListOf(_RULE)}),
                "retry": Section(
                    {"enabled": BOOL, "on_key_error": _BUDGET, "on_server_error": _BUDGET}
                ),
                "rate_limit_cooldown": DURATION,
            }
        ),
    },
    required=frozenset({"provider_type"}),
)
APP_SPEC: Final = Section(
    {
        "server": Section(
            {
                "host": Leaf(f.non_empty, "a host name or IP address"),
                "port": Leaf(f.integer(1, 65535), "an integer 1-65535"),
                "admin_token": SECRET,
                "max_body_mb": Leaf(f.number(above=0.0), "a number of megabytes > 0"),
                "max_event_subscribers": COUNT,
                "auth_failures_per_minute": Leaf(
                    f.integer(minimum=0), "an integer >= 0 (0: never block an address)"
                ),
                "workers": COUNT,
                "shutdown_timeout": DURATION,
            }
        ),
        "database": Section(
            {
                "url": Leaf(f.database_url, f.DATABASE_FORMS),
                "pool_min_size": COUNT,
                "pool_max_size": COUNT,
            }
        ),
        "worker": Section(
            {
                "enabled": BOOL,
                "max_concurrent_probes": COUNT,
                "max_concurrent_probes_per_instance": COUNT,
                "keys_sync_interval": DURATION,
                "check_interval": DURATION,
                "shutdown_timeout": DURATION,
                "confirm_within": DURATION,
                "server_error_cooldown": DURATION,
                "incident_window": DURATION,
            }
        ),
        "logging": Section(
            {
                "level": _enum(list(LEVELS)),
                "format": _enum(list(FORMATS)),
                "summary_interval": DURATION,
                "access_log": BOOL,
            }
        ),
        "providers": MapOf(_PROVIDER, key=Leaf(f.instance_name, f.INSTANCE_NAME_FORM)),
    }
)
"""The shape of the whole configuration file."""


@dataclass(slots=True)
class _Walk:
    lines: Mapping[Path, int]
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Path) -> int | None:
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def report(self, path: Path, message: str, allowed: str = "") -> None:
        self.problems.append(Problem(path, message, allowed, self.line_of(path)))

    def node(self, spec: Node, value: Any, path: Path) -> Any:
        match spec:
            case Leaf():
                return self.leaf(spec, value, path)
            case Section():
                return self.section(spec, value, path)
            case MapOf():
                return self.map_of(spec, value, path)
            case ListOf():
                return self.list_of(spec, value, path)

    def leaf(self, spec: Leaf, value: Any, path: Path) -> Any:
        try:
            return spec.parse(value)
        except ValueError as exc:
            shown = f.describe(value, secret=spec.secret, mask=mask_key)
            self.report(path, f"{shown} {exc}", spec.allowed)
            return None

    def section(self, spec: Section, value: Any, path: Path) -> dict[str, Any] | None:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            self.report(path, f"{f.describe(value)} is not a mapping", "a mapping of keys")
            return None
        allowed = list(spec.fields)
        for key in value:
            if key not in spec.fields:
                hint = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                guess = f"; did you mean {hint[0]!r}?" if hint else ""
                self.report((*path, str(key)), f"unknown key {key!r}{guess}", ", ".join(allowed))
        out: dict[str, Any] = {}
        for name, sub in spec.fields.items():
            if name in value:
                out[name] = self.node(sub, value[name], (*path, name))
            elif name in spec.required:
                self.report((*path, name), "is missing", _allowed_of(sub))
        return out

    def map_of(self, spec: MapOf, value: Any, path: Path) -> dict[Any, Any] | None:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            self.report(path, f"{f.describe(value)} is not a mapping", "a mapping")
            return None
        out: dict[Any, Any] = {}
        for key, item in value.items():
            sub_path = (*path, str(key))
            if spec.key is not None:
                try:
                    key = spec.key.parse(key)
                except ValueError as exc:
                    self.report(sub_path, f"key {key!r} {exc}", spec.key.allowed)
                    continue
            out[key] = self.node(spec.value, item, sub_path)
        return out

    def list_of(self, spec: ListOf, value: Any, path: Path) -> list[Any] | None:
        if value is None:
            value = []
        if not isinstance(value, list | tuple):
            self.report(path, f"{f.describe(value)} is not a list", "a list")
            return None
        return [self.node(spec.item, item, (*path, i)) for i, item in enumerate(value)]


def _allowed_of(spec: Node) -> str:
    return spec.allowed if isinstance(spec, Leaf) else "a mapping"


def validate(
    tree: Mapping[str, Any], lines: Mapping[Path, int]
) -> tuple[dict[str, Any], list[Problem]]:
    """Check the merged tree; return its typed form and every problem found.

    `lines` maps the paths the user wrote to their 1-based line numbers; a
    problem in a value that came from the defaults gets the nearest written
    ancestor's line. The typed tree is only meaningful when no problem is found.
    """
    walk = _Walk(lines)
    typed = walk.section(APP_SPEC, tree, ()) or {}
    _cross_check(typed, walk)
    return typed, walk.problems


def _cross_check(typed: Mapping[str, Any], walk: _Walk) -> None:
    database = typed.get("database") or {}
    low, high = database.get("pool_min_size"), database.get("pool_max_size")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        walk.report(
            ("database", "pool_min_size"),
            f"{low} is larger than pool_max_size ({high})",
            "pool_min_size <= pool_max_size",
        )
    admin_token = (typed.get("server") or {}).get("admin_token")
    if isinstance(admin_token, str) and admin_token and len(admin_token) < MIN_TOKEN_LENGTH:
        walk.report(
            ("server", "admin_token"),
            _too_short(admin_token),
            f'a random secret of at least {MIN_TOKEN_LENGTH} characters, or "" (loopback only)',
        )
    owners: dict[str, str] = {}
    for name, provider in (typed.get("providers") or {}).items():
        if not isinstance(provider, dict):
            continue
        _check_models(name, provider, walk)
        token_path: Path = ("providers", name, "access_control", "gateway_access_token")
        token = (provider.get("access_control") or {}).get("gateway_access_token")
        if not isinstance(token, str) or provider.get("enabled") is False:
            continue
        if not token:
            walk.report(
                token_path,
                "is empty: clients could not select this instance",
                'a non-empty secret, e.g. "${NAME_TOKEN}" from the environment',
            )
        elif len(token) < MIN_TOKEN_LENGTH:
            walk.report(
                token_path,
                _too_short(token),
                f"a random secret of at least {MIN_TOKEN_LENGTH} characters",
            )
        elif token in owners:
            walk.report(
                token_path,
                f"token {mask_key(token)} is already used by instance {owners[token]!r}",
                "a token unique to each instance",
            )
        else:
            owners[token] = name


def _too_short(token: str) -> str:
    """The problem of a short token, naming its length only (never its value)."""
    count = len(token)
    return f"is {count} character{'s' if count != 1 else ''} long: too short to resist guessing"


def _check_models(name: str, provider: Mapping[str, Any], walk: _Walk) -> None:
    models, default = provider.get("models"), provider.get("default_model")
    if not models or not isinstance(models, dict) or not isinstance(default, str):
        return
    if default not in models:
        walk.report(
            ("providers", name, "default_model"),
            f"{default!r} is not one of the configured models",
            ", ".join(map(str, models)) + " (or leave models empty)",
        )
