"""Where a reload of the configuration comes from in a serving process, and how it spreads.

A reload is asked for by SIGHUP (sent by the user to a single process, or
forwarded by the supervisor of `serve --workers N` to every worker) or by
`POST /-/api/reload` on any worker. Either way this process reloads its own
`LiveConfig`; a reload applied through the API of a worker then signals the
supervisor (SIGHUP), which forwards it to every worker, so they all reload the
same file (the worker that asked reads it again, finds it the one in effect,
and does nothing more: `config_unchanged`). A SIGHUP that
arrives while a reload runs waits for it and reloads again: the file read
last is the one in effect.
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import suppress
from typing import final

import structlog

from llmgateway.config.live import LiveConfig, ReloadResult

log = structlog.get_logger("llmgateway.web.reloading")


@final
class Reloads:
    """This process's reloads: from its SIGHUPs, and from the API (spread to the other workers).

    `supervisor` is the pid of the supervisor of `--workers N` when this
    process is one of its workers, else None.
    """

    def __init__(self, live: LiveConfig, supervisor: int | None = None) -> None:
        self._live = live
        self._supervisor = supervisor
        self._tasks: set[asyncio.Task[ReloadResult]] = set()

    def on_signal(self, _signum: int = signal.SIGHUP) -> None:
        """A SIGHUP arrived (in the loop's thread): reload in the background."""
        task = asyncio.get_running_loop().create_task(self._live.reload(), name="config-reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def from_api(self, *, dry_run: bool = False) -> ReloadResult:
        """Reload here; once applied, have the supervisor reload every worker too."""
        result = await self._live.reload(dry_run=dry_run)
        if result.applied and self._supervisor is not None:
            with suppress(ProcessLookupError):  # the supervisor is gone: this worker stops soon
                os.kill(self._supervisor, signal.SIGHUP)
                log.info("reload_spread", supervisor=self._supervisor)
        return result

    async def settle(self) -> None:
        """Wait for the reloads running now (the application is stopping)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
