"""The longest time a thread waited for a CPU while it could run (Linux), sampled every 1 ms.

Usage: python bench/cpu_wait.py PID [TID]   (TID defaults to PID: the main thread)

Reads the thread's `/proc/PID/task/TID/schedstat`, whose second field is the
time it has spent runnable on a run queue, waiting for a CPU that another
task had (the kernel adds a wait when the thread gets the CPU back). It
prints, when stdin closes (or at SIGTERM), `{"longest_ms", "within_50ms_ms",
"total_ms"}`: the longest wait at one go (consecutive steps of waiting), the
most waiting in any 50 ms (a CPU shared in turns: 8 ms waits between 1 ms
runs), and the total.

The scale bench runs it beside the gateway during each window. A loop lag
the gateway's own work caused shows its thread running; a lag with as long a
wait for the CPU is another process's doing (a database server, another
service) on the gateway's core.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import deque

WAITING = 0.7
"""Share of a step the thread must have waited for the CPU for the step to count as waiting."""

WINDOW_NS = 50_000_000
"""The span over which waits are added up (50 ms: the loop-lag bucket above 20 ms)."""


def run_delay_ns(fd: int) -> int:
    """The thread's time spent waiting on a run queue, in nanoseconds."""
    return int(os.pread(fd, 128, 0).split()[1])


def main() -> None:
    """Sample until stdin closes or SIGTERM; print the longest and the total wait in ms."""
    pid = int(sys.argv[1])
    tid = int(sys.argv[2]) if len(sys.argv) > 2 else pid
    fd = os.open(f"/proc/{pid}/task/{tid}/schedstat", os.O_RDONLY)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    longest = stretch = in_window = most = 0
    recent: deque[tuple[int, int]] = deque()  # (when, waited) of the last WINDOW_NS
    first = last_delay = run_delay_ns(fd)
    last = time.perf_counter_ns()
    while not done.is_set():
        time.sleep(0.001)
        try:
            delay = run_delay_ns(fd)
        except OSError:  # the thread ended
            break
        now = time.perf_counter_ns()
        waited, elapsed = delay - last_delay, now - last
        stretch = stretch + waited if waited >= WAITING * elapsed else 0
        longest = max(longest, stretch)
        recent.append((now, waited))
        in_window += waited
        while recent[0][0] <= now - WINDOW_NS:
            in_window -= recent.popleft()[1]
        most = max(most, in_window)
        last_delay, last = delay, now
    figures = {"longest_ms": longest, "within_50ms_ms": most, "total_ms": last_delay - first}
    print(json.dumps({name: ns / 1e6 for name, ns in figures.items()}))


if __name__ == "__main__":
    main()
