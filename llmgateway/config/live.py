"""The running application's configuration: one holder, swapped whole by a reload.

`LiveConfig.current` is the `ConfigAccessor` in effect. A unit of work (a
request, a keeper round, a follower pass) reads it once at its start and
keeps what it got to its end, so a reload never changes a configuration
under a request in flight.

`reload()` loads and validates the file again (the same loader as at
start-up), compares it with the one in effect (`diff_configs`), and then:

1. refuses it whole when it has problems or changes an option fixed while
   serving (`errors`; nothing changes, `config_reload_failed` is logged);
2. asks every part of the application that depends on the configuration
   (`Reconfigurable`) to prepare for it: what may wait or fail (syncing and
   loading the keys of an added instance) happens here, and a failure
   refuses the reload (nothing is in effect yet);
3. in one step that neither waits nor fails, swaps `current` and puts every
   prepared part into effect; then awaits what the parts left to tidy up
   (what a removed instance held, let go of in slices) and logs
   `config_reloaded` with the diff.

A file that differs in nothing from the one in effect is a reload done
already: it is `applied`, logged as `config_unchanged`, and no part is asked.

Reloads run one at a time. A dry run stops after the comparison.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, final

import structlog

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.diff import ConfigDiff, diff_configs
from llmgateway.config.loader import load_config
from llmgateway.config.schemas import AppConfig
from llmgateway.core.errors import ConfigError, GatewayError

log = structlog.get_logger("llmgateway.config.live")

type Commit = Callable[[], Awaitable[None] | None]
"""What puts a prepared change into effect: it neither waits nor fails.

It may return what is left to tidy up once every part is in effect (work
done in slices, with the event loop running): the reload awaits it before
it answers. The tidying must not fail either."""


class Reconfigurable(Protocol):
    """A part of the application that follows the configuration through reloads."""

    async def prepare_reload(self, new: ConfigAccessor, diff: ConfigDiff) -> Commit:
        """Do what may wait or fail for `new`; return the step that puts it into effect.

        Nothing in effect may change here (a later part may still refuse the
        reload); raise a `GatewayError` (e.g. `StoreError`) to refuse it.
        """
        ...


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did: applied or not, the difference found, the errors that refused it."""

    applied: bool
    diff: ConfigDiff
    errors: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        """The JSON answer of `POST /-/api/reload`."""
        return {
            "applied": self.applied,
            "added": list(self.diff.added),
            "removed": list(self.diff.removed),
            "changed": list(self.diff.changed),
            "errors": list(self.errors),
        }


@final
class LiveConfig:
    """The configuration in effect (`current`, first `accessor`), and its reload from `path`.

    `env` is the environment `${VAR}` references are read from (None: the
    process environment, read at each reload).
    """

    def __init__(
        self,
        accessor: ConfigAccessor,
        *,
        path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._current = accessor
        self._path = path
        self._env = env
        self._parts: list[Reconfigurable] = []
        self._lock = asyncio.Lock()

    @property
    def current(self) -> ConfigAccessor:
        """The configuration in effect now (read once per unit of work)."""
        return self._current

    def follow(self, part: Reconfigurable) -> None:
        """Make `part` prepare for, and put into effect, every reload from now on."""
        self._parts.append(part)

    async def reload(self, *, dry_run: bool = False) -> ReloadResult:
        """Load the file again and swap it in (see the module docstring); never raises."""
        async with self._lock:
            try:
                new = await asyncio.to_thread(self._load)
            except ConfigError as exc:
                return self._failed(ConfigDiff(), tuple(exc.problems))
            diff = diff_configs(self._current.config, new)
            if diff.errors:
                return self._failed(diff, diff.errors)
            if dry_run:
                return ReloadResult(applied=False, diff=diff)
            if diff.empty:
                # The file in effect, read again (e.g. the SIGHUP a worker's API reload
                # brings back to it through the supervisor): nothing to prepare or swap.
                log.info("config_unchanged")
                return ReloadResult(applied=True, diff=diff)
            accessor = ConfigAccessor(new)
            commits: list[Commit] = []
            try:
                for part in self._parts:
                    commits.append(await part.prepare_reload(accessor, diff))
            except GatewayError as exc:
                return self._failed(diff, (f"{type(exc).__name__}: {exc}",))
            self._current = accessor
            tidying = [commit() for commit in commits]
            for tidy in tidying:
                if tidy is not None:
                    await tidy
        log.info(
            "config_reloaded",
            added=list(diff.added),
            removed=list(diff.removed),
            changed=dict(diff.changes),
            settings=list(diff.settings),
        )
        return ReloadResult(applied=True, diff=diff)

    def _load(self) -> AppConfig:
        if self._path is None:
            raise ConfigError("this configuration was not read from a file: nothing to reload")
        return load_config(self._path, self._env)

    @staticmethod
    def _failed(diff: ConfigDiff, errors: tuple[str, ...]) -> ReloadResult:
        log.error("config_reload_failed", errors=list(errors))
        return ReloadResult(applied=False, diff=diff, errors=errors)
