"""Loading `config/providers.yaml`: read, resolve `${VAR}`, merge over defaults, validate, build.

    YAML (ruamel round trip, so line numbers are known)
      → `${VAR}` / `${VAR:-default}` in every string value
      → deep merge over `defaults.app_template()` (each provider over its type's template)
      → `validator.validate` (every problem, one report)
      → frozen dataclasses of `schemas`

The old name `worker:` of the `keeper:` section is still read, with a
deprecation warning in `AppConfig.deprecations`.

A read-only load (`read_only=True`, for commands that only look at the store,
such as `llmgateway status`) tolerates an unset `${VAR}` in a client token
(`providers.<name>.access_control.gateway_access_token`): the token is left
empty (no client could select the instance with it), and everything else is
validated as usual.

Any failure raises one `ConfigError` whose `problems` lists every mistake found.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from llmgateway.config import defaults
from llmgateway.config.fields import parse_duration
from llmgateway.config.options import Leaf, ListOf, MapOf, Node, options_of
from llmgateway.config.schemas import AppConfig
from llmgateway.config.validator import Path as TreePath
from llmgateway.config.validator import Problem, validate
from llmgateway.config.variables import Resolution, resolve_tree
from llmgateway.core.constants import ProviderType
from llmgateway.core.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "load_config",
    "parse_duration",
    "resolve_config_path",
]

DEFAULT_CONFIG_PATH: Final = Path("config/providers.yaml")
"""Where the configuration is read from when neither `--config` nor `LLMGW_CONFIG` says."""

CONFIG_ENV: Final = "LLMGW_CONFIG"
"""The environment variable naming the configuration file."""

KEEPER_SECTION: Final = "keeper"
OLD_KEEPER_SECTION: Final = "worker"
"""The former name of the `keeper` section, still read with a deprecation warning."""

KEEPER_RENAMED: Final = (
    "the `worker:` section is now called `keeper:`; rename it "
    "(`worker:` is still read, with this warning)"
)


def resolve_config_path(cli_value: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The configuration file to use: `--config`, else `$LLMGW_CONFIG`, else `config/providers.yaml`."""
    if cli_value:
        return Path(cli_value)
    environ = os.environ if env is None else env
    from_env = environ.get(CONFIG_ENV, "")
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    read_only: bool = False,
) -> AppConfig:
    """Load, resolve, merge, validate and build the configuration at `path`.

    `path` None means `resolve_config_path(None, env)`; `env` None means
    `os.environ`; `read_only` tolerates unset variables in client tokens (see
    the module docstring). Raises `ConfigError` listing every problem.
    """
    environ = os.environ if env is None else env
    file = Path(path) if path is not None else resolve_config_path(None, environ)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {file} does not exist; create one with "
            f"`llmgateway config create <type>:<name> --config {file}`"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {file}: {exc}") from None
    return load_config_text(text, environ, source=str(file), read_only=read_only)


def load_config_text(
    text: str, env: Mapping[str, str], source: str = "<config>", *, read_only: bool = False
) -> AppConfig:
    """`load_config` for YAML text already read (`source` names it in messages)."""
    raw = parse_yaml(text, source)
    problems: list[Problem] = []
    lines: dict[TreePath, int] = {}
    # Read-only: the client tokens left empty by an unset variable (not problems).
    unusable: set[TreePath] | None = set() if read_only else None
    resolved = resolve_tree(raw, (), Resolution(env, lines, problems, unusable))
    if resolved is None:
        resolved = {}
    if not isinstance(resolved, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    deprecations: list[str] = []
    renamed = _rename_keeper(resolved, lines, problems, deprecations)
    merged = merge_over_defaults(resolved)
    typed, invalid = validate(merged, lines)
    if renamed:
        invalid = [_as_written(p) for p in invalid]
    # A value left empty by an unset variable is already reported once (or tolerated,
    # read-only); don't cascade.
    unresolved = {p.path for p in problems} | (unusable or set())
    problems.extend(p for p in invalid if p.path not in unresolved)
    if problems:
        problems.sort(key=lambda p: (p.line if p.line is not None else 1 << 30))
        count = len(problems)
        raise ConfigError(
            f"{source}: {count} problem{'s' if count != 1 else ''} found",
            [str(p) for p in problems],
        )
    _fill_models(typed)
    return build(AppConfig, typed, deprecations=tuple(deprecations))


def _rename_keeper(
    tree: dict[Any, Any],
    lines: dict[TreePath, int],
    problems: list[Problem],
    deprecations: list[str],
) -> bool:
    """Read the old `worker:` section as `keeper:`; True when it was renamed.

    Both sections at once is a problem; the old one alone adds the deprecation
    warning to `deprecations` and moves its line numbers under the new name.
    """
    if OLD_KEEPER_SECTION not in tree:
        return False
    where: TreePath = (OLD_KEEPER_SECTION,)
    if KEEPER_SECTION in tree:
        problems.append(
            Problem(
                where,
                "is the old name of the `keeper` section, which is given too",
                "one `keeper:` section",
                lines.get(where),
            )
        )
        del tree[OLD_KEEPER_SECTION]
        return False
    tree[KEEPER_SECTION] = tree.pop(OLD_KEEPER_SECTION)
    for path in [p for p in lines if p[:1] == where]:
        lines[(KEEPER_SECTION, *path[1:])] = lines.pop(path)
    deprecations.append(KEEPER_RENAMED)
    return True


def _as_written(problem: Problem) -> Problem:
    """`problem` with the path under the old `worker` name the user wrote."""
    if problem.path[:1] != (KEEPER_SECTION,):
        return problem
    return dataclasses.replace(problem, path=(OLD_KEEPER_SECTION, *problem.path[1:]))


def parse_yaml(text: str, source: str) -> Any:
    """The round-trip YAML tree of `text`; a syntax error becomes a ConfigError with its position.

    The message says where and what kind of mistake, never the values around
    it: the file holds tokens and keys (a duplicated `admin_token` would
    otherwise print both of its values).
    """
    yaml = YAML(typ="rt")
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{source}: invalid YAML{where}: {_yaml_problem(exc)}") from None
    except YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML ({type(exc).__name__})") from None


_QUOTED: Final = re.compile(r"\"[^\"]*\"|'[^']*'")


def _yaml_problem(exc: MarkedYAMLError) -> str:
    """What is wrong, without any quoted piece of the file."""
    if isinstance(exc, DuplicateKeyError):
        return "a key is written twice in the same mapping"
    problem = exc.problem or type(exc).__name__
    return _QUOTED.sub("(…)", problem)


def merge(base: Any, override: Any) -> Any:
    """`override` deep-merged over `base`: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return override


def merge_over_defaults(user: Mapping[str, Any]) -> dict[str, Any]:
    """The user's tree merged over every default (sections, providers, models, rules)."""
    merged: dict[str, Any] = merge(defaults.app_template(), dict(user))
    providers = merged.get("providers")
    if isinstance(providers, dict):
        merged["providers"] = {
            name: _merge_provider(str(name), value) for name, value in providers.items()
        }
    return merged


def _merge_provider(name: str, user: Any) -> Any:
    if user is None:
        user = {}
    if not isinstance(user, dict):
        return user
    raw_type = user.get("provider_type")
    known = isinstance(raw_type, str) and raw_type in set(ProviderType)
    kind = (
        ProviderType(raw_type) if known and isinstance(raw_type, str) else ProviderType.OPENAI_LIKE
    )
    out: dict[str, Any] = merge(defaults.provider_template(kind, name), user)
    models = out.get("models")
    if isinstance(models, list) and all(isinstance(m, str) for m in models):
        models = {m: {} for m in models}
    if isinstance(models, dict):
        out["models"] = {
            m: merge(defaults.model_template(), {} if v is None else v) for m, v in models.items()
        }
    parsing = (out.get("gateway_policy") or {}).get("error_parsing")
    if isinstance(parsing, dict) and isinstance(parsing.get("rules"), list):
        parsing["rules"] = [merge(defaults.rule_template(), r) for r in parsing["rules"]]
    return out


def build[T](kind: type[T], tree: Mapping[str, Any], **extra: Any) -> T:
    """The dataclass `kind` from its validated, typed tree (options not in `tree` keep defaults).

    An entry of a map keeps its key in the entry's `name` field when its class
    has one that is not an option (a provider instance).
    """
    values = dict(extra)
    for name, declared in options_of(kind).items():
        if name in tree:
            values[name] = _built(declared.node, tree[name])
    return kind(**values)


def _built(node: Node, value: Any) -> Any:
    if isinstance(node, Leaf):
        return value
    if isinstance(node, ListOf):
        return tuple(_built(node.item, each) for each in value)
    if isinstance(node, MapOf):
        entry = node.value
        if isinstance(entry, type) and _keeps_key(entry):
            return {key: build(entry, item, name=key) for key, item in value.items()}
        return {key: _built(entry, item) for key, item in value.items()}
    return build(node, value)


def _keeps_key(node: Node) -> bool:
    """True for a section class with a `name` field that is not an option."""
    if not isinstance(node, type) or "name" in options_of(node):
        return False
    return any(item.name == "name" for item in dataclasses.fields(node))


def _fill_models(typed: Mapping[str, Any]) -> None:
    """An instance without `models` serves and probes its `default_model`."""
    for provider in typed["providers"].values():
        if not provider["models"]:
            provider["models"] = {provider["default_model"]: {}}


def describe_problems(error: ConfigError) -> str:
    """The whole report of `error`: its message, then one indented line per problem."""
    lines = [str(error)]
    if error.problems != [str(error)]:
        lines.extend(f"  - {p}" for p in error.problems)
    return "\n".join(lines)
