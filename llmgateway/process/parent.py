"""Workers die with their supervisor: Linux's parent-death signal, and a watch where it is missing.

A worker must never outlive the supervisor that started it (a supervisor
killed with SIGKILL cannot stop its workers itself), and must never be killed
by a stop or reload signal that arrives before it can handle one.

- `child_setup(parent)` runs in the child right after fork, before exec. It
  blocks SIGTERM, SIGINT and SIGHUP, so a stop or reload signal sent while
  the worker's interpreter starts stays pending until `capture()` unblocks it;
  it asks the kernel to send SIGTERM when the parent dies
  (`prctl(PR_SET_PDEATHSIG)`, which survives exec); then it looks at its
  parent again: a parent that died before the `prctl` call sends no signal
  any more, so the child exits at once instead of starting as an orphan.
- `ParentWatch`, in the worker, tells whether the supervisor is gone (the
  parent pid changed: the orphan was re-parented) and, where `prctl` is not
  available, polls for it.

A worker whose supervisor is gone hurries its shutdown (`ShutdownClock.hurry`):
nobody is left to wait for it.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Final, final

from llmgateway.process.stop_signals import RELOAD_SIGNALS, STOP_SIGNALS

PR_SET_PDEATHSIG: Final = 1
"""`prctl` option: the signal this process gets when its parent dies (linux/prctl.h)."""

PARENT_DEATH_SIGNAL: Final = signal.SIGTERM
"""What a worker receives when its supervisor dies."""

PARENT_CHECK_INTERVAL: Final = 0.5
"""Seconds between two looks at the parent pid, where the kernel sends no signal."""

EXIT_ORPHANED: Final = 1
"""Exit code of a child whose parent died before it could ask for the parent-death signal."""

type Prctl = Callable[[int, int, int, int, int], int]


def load_prctl() -> Prctl | None:
    """libc's `prctl` on Linux, None elsewhere (or when it cannot be found)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    function.argtypes += [ctypes.c_ulong]
    function.restype = ctypes.c_int
    prctl: Prctl = function
    return prctl


def child_setup(parent: int) -> Callable[[], None]:
    """The `preexec_fn` of a worker started by process `parent` (see the module docstring).

    `prctl` is looked up here, in the parent, so the child only calls it.
    """
    prctl = load_prctl()

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, (*STOP_SIGNALS, *RELOAD_SIGNALS))
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
        if os.getppid() != parent:  # died before the prctl call: no signal will come
            os._exit(EXIT_ORPHANED)

    return setup


@final
class ParentWatch:
    """A worker's view of its supervisor (process `supervisor`)."""

    def __init__(self, supervisor: int, *, interval: float = PARENT_CHECK_INTERVAL) -> None:
        self.supervisor = supervisor
        self._interval = interval

    def orphaned(self) -> bool:
        """True when the supervisor is gone (this process was re-parented)."""
        return os.getppid() != self.supervisor

    async def watch(self, on_orphaned: Callable[[], None]) -> None:
        """Call `on_orphaned()` once the supervisor is gone (polls; the fallback of the signal)."""
        while not self.orphaned():  # noqa: ASYNC110 (no event exists for a parent's death)
            await asyncio.sleep(self._interval)
        on_orphaned()
