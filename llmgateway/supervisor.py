"""`serve --workers N`: a supervisor process and N worker processes sharing one port.

The supervisor re-executes `python -m llmgateway serve --worker-index i` N
times; every worker binds the listening port with SO_REUSEPORT, so the kernel
spreads new connections across them, and runs the whole application (its own
live pool, keeper, follower). The workers are put in their own process group:
a terminal's Ctrl-C reaches the supervisor only, which forwards SIGINT or
SIGTERM once to every worker and waits for them.

Exit: 0 when every worker exited 0 after a forwarded signal; 1 when a worker
died on its own (the others are then stopped) or exited non-zero. Workers are
not restarted: a process manager (systemd, Kubernetes) restarts the whole.
A worker whose supervisor disappears (killed with SIGKILL) notices within a
second (`watch_parent`) and shuts down gracefully.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Final

import structlog
from aiohttp import web

log = structlog.get_logger("llmgateway.supervisor")

POLL_INTERVAL: Final = 0.1
"""Seconds between two looks at the workers' exit statuses."""

PARENT_CHECK_INTERVAL: Final = 1.0
"""Seconds between two checks, in a worker, that its supervisor is still there."""

EXIT_WORKER_FAILED: Final = 1

_FORWARDED: Final = (signal.SIGTERM, signal.SIGINT)


def worker_command(config_path: Path, index: int, host: str | None, port: int | None) -> list[str]:
    """The command line of worker `index`."""
    command = [sys.executable, "-m", "llmgateway", "serve", "--config", str(config_path)]
    command += ["--worker-index", str(index)]
    if host is not None:
        command += ["--host", host]
    if port is not None:
        command += ["--port", str(port)]
    return command


def supervise(config_path: Path, workers: int, host: str | None, port: int | None) -> int:
    """Run `workers` worker processes until a signal stops them; return the exit code."""
    children = [
        subprocess.Popen(worker_command(config_path, i, host, port), process_group=0)
        for i in range(workers)
    ]
    log.info("workers started", workers=workers, pids=[c.pid for c in children])
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.returncode is None:
                with suppress(ProcessLookupError):  # exited between the check and the kill
                    os.kill(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    failed = False
    try:
        running = list(children)
        while running:
            time.sleep(POLL_INTERVAL)
            for child in list(running):
                code = child.poll()
                if code is None:
                    continue
                running.remove(child)
                if not stopping:
                    log.error("worker died, stopping the others", pid=child.pid, code=code)
                    failed = True
                    forward(signal.SIGTERM, None)
                elif code != 0:
                    log.error("worker exited with an error", pid=child.pid, code=code)
                    failed = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("workers stopped", failed=failed)
    return EXIT_WORKER_FAILED if failed else 0


async def watch_parent(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context of a worker: SIGTERM itself if its supervisor goes away."""
    parent = os.getppid()

    async def watch() -> None:
        while os.getppid() == parent:  # noqa: ASYNC110 (no event exists for a parent's death)
            await asyncio.sleep(PARENT_CHECK_INTERVAL)
        log.warning("supervisor gone, shutting down", supervisor=parent)
        os.kill(os.getpid(), signal.SIGTERM)

    task = asyncio.create_task(watch(), name="llmgateway-watch-parent")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
