"""What a reload would change: the difference between two loaded configurations.

`diff_configs(old, new)` compares option by option. Provider instances are
`added`, `removed`, or `changed` (any option of the instance: keys, models,
token, rules, policies, `enabled`...); every other option that differs is
listed in `settings`. An option the running application cannot take over
without a restart (`RESTART_ONLY`: the listening address, the worker count,
the shutdown grace, the whole `database` section, ...) makes the reload an error:
it is listed in `errors`, and a reload with errors changes nothing.

Differences are named by their YAML path (`server.admin_token`,
`providers.a.models["gpt-4.1"]`), never by their values: the file holds keys
and tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from llmgateway.config.schemas import AppConfig
from llmgateway.config.validator import Path, format_path

RESTART_ONLY: Final[tuple[Path, ...]] = (
    ("server", "host"),
    ("server", "port"),
    ("server", "workers"),
    ("server", "shutdown_timeout"),
    ("database",),
    ("keeper", "enabled"),
    ("keeper", "max_concurrent_probes"),
    ("keeper", "max_concurrent_probes_per_instance"),
    ("logging", "level"),
    ("logging", "format"),
)
"""Options (or whole sections) fixed for the life of a serving process.

The listener, the store, the keeper's existence and concurrency limits, and
the log pipeline are built once at start-up; everything else is read from
the configuration in effect at the start of each unit of work.
"""

RESTART_HINT: Final = "cannot change while serving; restart llmgateway to apply it"


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigDiff:
    """The difference between the configuration in use and a newly loaded one.

    `added`, `removed` and `changed` name provider instances (in file order);
    `changes` lists, per changed instance, the paths of its options that
    differ; `settings` the paths of the other options that differ; `errors`
    one line per difference that needs a restart.
    """

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    changes: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    settings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the two configurations are the same, option for option."""
        return not (self.added or self.removed or self.changed or self.settings)


def diff_configs(old: AppConfig, new: AppConfig) -> ConfigDiff:
    """What changes from `old` to `new` (see the module docstring)."""
    added = tuple(name for name in new.providers if name not in old.providers)
    removed = tuple(name for name in old.providers if name not in new.providers)
    changes: dict[str, tuple[str, ...]] = {}
    for name, provider in new.providers.items():
        before = old.providers.get(name)
        if before is not None and before != provider:
            changes[name] = tuple(format_path(p) for p in differences(before, provider))
    settings: list[Path] = []
    for section in dataclasses.fields(AppConfig):
        if section.compare and section.name != "providers":
            settings.extend(
                differences(getattr(old, section.name), getattr(new, section.name), (section.name,))
            )
    errors = tuple(
        f"{format_path(path)} {RESTART_HINT}" for path in settings if _restart_only(path)
    )
    return ConfigDiff(
        added=added,
        removed=removed,
        changed=tuple(changes),
        changes=changes,
        settings=tuple(format_path(p) for p in settings),
        errors=errors,
    )


def differences(old: object, new: object, path: Path = ()) -> list[Path]:
    """The paths under `path` where `old` and `new` differ, down to single options.

    Dataclasses of one type are compared field by field (fields left out of
    comparisons are skipped), mappings key by key (a key on one side only is
    a difference); any other pair of unequal values is one difference, at
    `path` (a list of keys is one option).
    """
    if old == new:
        return []
    if dataclasses.is_dataclass(old) and type(old) is type(new):
        found: list[Path] = []
        for item in dataclasses.fields(old):
            if item.compare:
                found.extend(
                    differences(
                        getattr(old, item.name), getattr(new, item.name), (*path, item.name)
                    )
                )
        return found
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in [*old, *(k for k in new if k not in old)]:
            if key not in old or key not in new:
                found.append((*path, str(key)))
            else:
                found.extend(differences(old[key], new[key], (*path, str(key))))
        return found
    return [path]


def _restart_only(path: Path) -> bool:
    return any(path[: len(fixed)] == fixed for fixed in RESTART_ONLY)
