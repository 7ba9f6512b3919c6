"""A serving process's stop signals (SIGTERM, SIGINT), captured from its first moments.

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


_PROCESS_SIGNALS: list[StopSignals] = []


def process_stop_signals() -> StopSignals:
    """This process's stop signals, captured on the first call (the earliest moment of `serve`)."""
    if not _PROCESS_SIGNALS:
        _PROCESS_SIGNALS.append(StopSignals())
    signals = _PROCESS_SIGNALS[0]
    if not signals.capturing:
        signals.capture()
    return signals


@final
class StopSignals:
    """SIGTERM and SIGINT of this process, recorded from `capture()` until it exits.

    `received` lists the signal numbers in arrival order; every listener is
    called once per signal, in the main thread (the loop's thread while it runs).
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._listeners: list[Callable[[int], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._before: dict[int, _Handler] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return bool(self.received)

    @property
    def capturing(self) -> bool:
        """True between `capture()` and `release()`."""
        return bool(self._before)

    def capture(self) -> None:
        """Handle both signals with a recording handler, then unblock them (pending ones arrive now)."""
        for sig in STOP_SIGNALS:
            self._before.setdefault(sig, signal.signal(sig, self._on_python_signal))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def release(self) -> None:
        """Give both signals back to the handlers they had before `capture()`."""
        for sig, handler in self._before.items():
            signal.signal(sig, handler)
        self._before.clear()

    def on_signal(self, listener: Callable[[int], None]) -> None:
        """Call `listener(signum)` for every stop signal from now on."""
        self._listeners.append(listener)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let `loop` handle both signals while it runs (wakes it at once)."""
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._record, sig)
        self._loop = loop

    def detach(self) -> None:
        """Hand both signals back to the recording Python handler (the loop is ending)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        # Removing the loop's handler restores the default action for a moment, which
        # must never run: the signals wait, blocked, until the Python handler is back.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for sig in STOP_SIGNALS:
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
