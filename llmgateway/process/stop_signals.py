"""A serving process's stop signals (SIGTERM, SIGINT) and reload signal (SIGHUP), captured early.

`serve` must never be killed by a stop signal's default action, whatever it is
doing when the signal comes (see `llmgateway.core.lifecycle` for what it then
does). `process_stop_signals()` installs a Python handler that records them:
`llmgateway serve` calls it before the command line is parsed (this module
imports nothing heavy, so that moment comes early). While the event loop runs,
the loop's own handlers record them instead (`attach`), which wakes the loop
at once; after it, the Python handler again (`detach`). Worker processes
start with both signals blocked (see `llmgateway.process.parent`), so one sent while
their interpreter is still starting waits, pending, until `capture()`
unblocks it.

SIGHUP asks for a reload of the configuration. Its default action would end
the process too, so it is captured the same way (`process_reload_signals()`,
a `ReloadSignals`), from the same early moment, and blocked in a starting
worker alike.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, final

if TYPE_CHECKING:
    import asyncio

type _Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop a `serve` process (its supervisor's included)."""

RELOAD_SIGNALS: Final = (signal.SIGHUP,)
"""The signal that makes a `serve` process reload its configuration (a supervisor forwards it)."""

_PROCESS_STOP: list[StopSignals] = []
_PROCESS_RELOAD: list[ReloadSignals] = []


def process_stop_signals() -> StopSignals:
    """This process's stop signals, captured on the first call (the earliest moment of `serve`)."""
    if not _PROCESS_STOP:
        _PROCESS_STOP.append(StopSignals())
    signals = _PROCESS_STOP[0]
    if not signals.capturing:
        signals.capture()
    return signals


def process_reload_signals() -> ReloadSignals:
    """This process's reload signal, captured on the first call (with the stop signals)."""
    if not _PROCESS_RELOAD:
        _PROCESS_RELOAD.append(ReloadSignals())
    signals = _PROCESS_RELOAD[0]
    if not signals.capturing:
        signals.capture()
    return signals


class CapturedSignals:
    """Some signals of this process, recorded from `capture()` until it exits.

    `received` lists the signal numbers in arrival order; every listener is
    called once per signal, in the main thread (the loop's thread while it runs).
    """

    def __init__(self, numbers: tuple[signal.Signals, ...]) -> None:
        self.numbers = numbers
        self.received: list[int] = []
        self._listeners: list[Callable[[int], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._before: dict[int, _Handler] = {}

    @property
    def capturing(self) -> bool:
        """True between `capture()` and `release()`."""
        return bool(self._before)

    def capture(self) -> None:
        """Handle the signals with a recording handler, then unblock them (pending ones arrive now)."""
        for sig in self.numbers:
            self._before.setdefault(sig, signal.signal(sig, self._on_python_signal))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.numbers)

    def release(self) -> None:
        """Give the signals back to the handlers they had before `capture()`."""
        for sig, handler in self._before.items():
            signal.signal(sig, handler)
        self._before.clear()

    def on_signal(self, listener: Callable[[int], None]) -> None:
        """Call `listener(signum)` for every one of the signals from now on."""
        self._listeners.append(listener)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let `loop` handle the signals while it runs (wakes it at once)."""
        for sig in self.numbers:
            loop.add_signal_handler(sig, self._record, sig)
        self._loop = loop

    def detach(self) -> None:
        """Hand the signals back to the recording Python handler (the loop is ending)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        # Removing the loop's handler restores the default action for a moment, which
        # must never run: the signals wait, blocked, until the Python handler is back.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, self.numbers)
        try:
            for sig in self.numbers:
                loop.remove_signal_handler(sig)
                signal.signal(sig, self._on_python_signal)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _on_python_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._record(signum)

    def _record(self, signum: int) -> None:
        self.received.append(signum)
        for listener in list(self._listeners):
            listener(signum)


@final
class StopSignals(CapturedSignals):
    """SIGTERM and SIGINT of this process: the first begins the shutdown, a later one hurries it."""

    def __init__(self) -> None:
        super().__init__(STOP_SIGNALS)

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return bool(self.received)


@final
class ReloadSignals(CapturedSignals):
    """SIGHUP of this process: each one asks for the configuration to be reloaded."""

    def __init__(self) -> None:
        super().__init__(RELOAD_SIGNALS)
