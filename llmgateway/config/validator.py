"""Validation of the merged configuration tree, collecting every problem in one report.

`validate` walks the tree against the options declared on the schema
dataclasses (`AppConfig` down), turns each value into its typed form
(durations to seconds, enums to members) and records a `Problem` (YAML path,
line, what is wrong, what is allowed) for every mistake instead of stopping at
the first. Cross-field rules (unique tokens, default model among
the models) run afterwards on the typed tree.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from llmgateway.config import fields as f
from llmgateway.config.options import Leaf, ListOf, MapOf, Node, options_of
from llmgateway.config.schemas import AppConfig
from llmgateway.core.masking import mask_key

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
            case MapOf():
                return self.map_of(spec, value, path)
            case ListOf():
                return self.list_of(spec, value, path)
            case _:
                return self.section(spec, value, path)

    def leaf(self, spec: Leaf, value: Any, path: Path) -> Any:
        try:
            return spec.parse(value)
        except ValueError as exc:
            shown = f.describe(value, secret=spec.secret, mask=mask_key)
            self.report(path, f"{shown} {exc}", spec.allowed)
            return None

    def section(self, kind: type, value: Any, path: Path) -> dict[str, Any] | None:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            self.report(path, f"{f.describe(value)} is not a mapping", "a mapping of keys")
            return None
        declared = options_of(kind)
        allowed = list(declared)
        for key in value:
            if key not in declared:
                hint = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                guess = f"; did you mean {hint[0]!r}?" if hint else ""
                self.report((*path, str(key)), f"unknown key {key!r}{guess}", ", ".join(allowed))
        out: dict[str, Any] = {}
        for name, option in declared.items():
            if name in value:
                out[name] = self.node(option.node, value[name], (*path, name))
            elif option.required:
                self.report((*path, name), "is missing", _allowed_of(option.node))
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
    typed = walk.section(AppConfig, tree, ()) or {}
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
