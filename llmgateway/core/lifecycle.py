"""Stopping a serving process at any moment: the shutdown's deadline, a watchdog.

A `serve` process may receive SIGTERM or SIGINT (see `llmgateway.process.stop_signals`)
at any point of its life: while its interpreter starts, while the store
migrates, while keys sync, while the pool loads, while it serves, or while it
is already shutting down.

- `ShutdownClock` says how long each remaining step of a shutdown may take.
  The first signal begins it: in-flight requests get `server.shutdown_timeout`
  seconds, then everything else shares what is left of `EXIT_MARGIN` more
  seconds. A second signal, or the supervisor's death, hurries it: client
  connections are closed at once and the process is done within `HURRY_LIMIT`.
- `Watchdog` ends the process if a shutdown ever overruns those bounds (a
  thread that never finishes, a step that ignores its budget): it logs the
  overrun and exits 1.
- `interruptible_sleep` lets a background loop's waits end at its stop.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Final, final

import structlog

log = structlog.get_logger("llmgateway.core.lifecycle")

EXIT_MARGIN: Final = 4.0
"""Seconds after `server.shutdown_timeout` by which a shutdown has done everything."""

WATCHDOG_SLACK: Final = 0.5
"""Seconds past a shutdown's deadline after which the watchdog ends the process."""

HURRY_LIMIT: Final = 1.2
"""Seconds a hurried shutdown (second signal, supervisor gone) takes at most."""

MIN_STEP: Final = 0.1
"""Seconds a shutdown step always gets, even past the deadline (a flush may still succeed)."""

EXIT_OVERRUN: Final = 1
"""Exit code of a process the watchdog ended."""


@final
class ShutdownClock:
    """When this process's shutdown began, its deadline, and what each step may still take.

    `grace` is `server.shutdown_timeout`: the time in-flight requests get.
    Before `begin()` every step gets what it asks for (`allow` returns it).
    """

    def __init__(self, grace: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self._clock = clock
        self._deadline = math.inf
        self.began_at: float | None = None
        self.hurried = False
        self._listeners: list[Callable[[], None]] = []

    @property
    def begun(self) -> bool:
        """True once the shutdown began."""
        return self.began_at is not None

    @property
    def deadline(self) -> float:
        """The `clock()` value by which the process is done (infinite before `begin`)."""
        return self._deadline

    def begin(self) -> None:
        """Start the shutdown now (later calls change nothing)."""
        if self.began_at is not None:
            return
        self.began_at = self._clock()
        self._deadline = self.began_at + self.grace + EXIT_MARGIN
        self._changed()

    def hurry(self) -> None:
        """Finish within HURRY_LIMIT from now: close client connections, shorten every step."""
        self.begin()
        self._deadline = min(self._deadline, self._clock() + HURRY_LIMIT)
        first = not self.hurried
        self.hurried = True
        if first:
            self._changed()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener()` when the shutdown begins and when it is hurried."""
        self._listeners.append(listener)

    def left(self) -> float:
        """Seconds until the deadline (infinite before `begin`)."""
        return self._deadline - self._clock()

    def allow(self, wanted: float, *, keep: float = 0.0) -> float:
        """The seconds a step that would like `wanted` may take, keeping `keep` for later steps."""
        return min(wanted, max(self.left() - keep, MIN_STEP))

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()


@final
class Watchdog:
    """Ends the process when it is still running at a given moment (a daemon timer thread)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._timer: threading.Timer | None = None
        self._at = math.inf

    def arm(self, at: float, what: str) -> None:
        """Exit 1 at `clock()` value `at` unless the process ended before; only moves earlier."""
        if at >= self._at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = threading.Timer(max(at - self._clock(), 0.0), _overrun, args=(what,))
        self._timer.name = "llmgateway-watchdog"
        self._timer.daemon = True
        self._timer.start()


def _overrun(what: str) -> None:
    log.error("shutdown_overran", step=what)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # closed or broken: nothing more to say there
            stream.flush()
    os._exit(EXIT_OVERRUN)


def interruptible_sleep(
    sleep: Callable[[float], Awaitable[None]], stopping: asyncio.Event
) -> Callable[[float], Awaitable[None]]:
    """`sleep`, returning early once `stopping` is set (a background loop's waits end at its stop)."""

    async def pause(seconds: float) -> None:
        if stopping.is_set():
            return
        sleeper = asyncio.ensure_future(sleep(seconds))
        waiter = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)

    return pause
