"""Work off the event loop: on a thread only when it is large, and at a lower priority.

`on_thread_when` runs a function here or on a thread: a thread hop costs more
than a little work, and large work (decoding 100,000 rows) on the loop holds
every request in flight.

Background threads give way to the event loop's thread on a busy CPU. The
gateway's threads do bulk work off the loop: decoding 100,000 stored rows, checking an import's lines, hashing a key file, running SQLite's
statements. On a machine whose CPUs are all busy (a container given one
CPU, a host with other load), the operating system shares the CPU between
such a thread and the loop's thread, and a request waits for the thread's
time slice to end. A thread at a lower priority (a higher nice value, as
`nice` sets for a process; Linux sets it per thread) gets the CPU only when
the loop's thread does not want it, so requests keep their latency and the
bulk work still gets every idle cycle. Measured on one CPU, with a thread
running a long SQLite statement (which releases the GIL): a 1 ms timer on
the loop woke up to 4.1 ms late with the thread at the process's priority,
and at most 0.3 ms late with it at `BACKGROUND_NICE`. (Python code on a
thread holds the GIL instead; the switch interval bounds that wait, see
`llmgateway.process.server`.)

Lowering one's own priority needs no privilege. Where it cannot be done
(another operating system, a sandbox refusing it), the thread runs at the
process's priority, as before.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

BACKGROUND_NICE: Final = 10
"""Nice value added to a background thread's (0 is the process's; 19 the lowest priority)."""

THREAD_PREFIX: Final = "llmgateway-background"
"""Name prefix of the default executor's threads."""


def lower_this_thread() -> bool:
    """Give the calling thread `BACKGROUND_NICE` more than the process's nice value.

    Returns True when the thread's priority was lowered. Only the calling
    thread changes (Linux keeps a nice value per thread); elsewhere, or when
    the system refuses, nothing changes and False is returned.
    """
    if not hasattr(os, "setpriority"):  # pragma: no cover - not POSIX
        return False
    try:
        base = os.getpriority(os.PRIO_PROCESS, os.getpid())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), base + BACKGROUND_NICE)
    except OSError:
        return False
    return True


def background_executor() -> ThreadPoolExecutor:
    """A thread pool whose threads run at background priority (the loop's default executor).

    `asyncio.to_thread` and `run_in_executor(None, …)` use it once it is
    set with `loop.set_default_executor`; its size is asyncio's default.
    """
    return ThreadPoolExecutor(thread_name_prefix=THREAD_PREFIX, initializer=lower_this_thread)


async def on_thread_when[**P, T](
    many: bool, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """`function(*args, **kwargs)`, on a thread (`asyncio.to_thread`) when `many`, else here.

    The caller says what "many" is for its work (rows, keys, bytes): below it
    the thread hop costs more than the work; above it the work would hold the
    event loop.
    """
    if many:
        return await asyncio.to_thread(function, *args, **kwargs)
    return function(*args, **kwargs)
