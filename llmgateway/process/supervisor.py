"""`serve --workers N`: a supervisor process and N worker processes sharing one port.

The supervisor re-executes `python -m llmgateway serve --worker-index i
--supervisor-pid P` N times; every worker binds the listening port with
SO_REUSEPORT, so the kernel spreads new connections across them, and runs the
whole application (its own live pool, keeper, follower). The workers are put
in their own process group: a terminal's Ctrl-C reaches the supervisor only,
which forwards every SIGINT or SIGTERM it receives to every worker (the first
starts their graceful shutdown, a second one hurries it). A SIGHUP it
receives (from the user, or from a worker asked to reload through the API)
is forwarded to every worker: each reloads the configuration.

Each worker is forked with SIGTERM, SIGINT and SIGHUP blocked and with the kernel's
parent-death signal set (`llmgateway.process.parent.child_setup`): a signal forwarded
while a worker's interpreter is still starting waits until the worker can
handle it, and a supervisor killed with SIGKILL takes its workers with it.

A stop signal that arrives while the workers are being started ends the
start (no further worker is started). From the first signal on, the workers
get `server.shutdown_timeout` + ESCALATE_AFTER seconds; one still running
then is killed with SIGKILL, which is logged, and the supervisor exits 1.

Exit: 0 when every worker exited 0 after a forwarded signal; 2 when a worker
died on its own with 2 (its configuration cannot be used, e.g. a
`database.encryption_key` that does not fit the store); 1 when a worker died
on its own otherwise (the others are then stopped), exited non-zero, or had
to be killed. Workers are not restarted: a process manager (systemd, Kubernetes)
restarts the whole.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Final, final

import structlog

from llmgateway.process.parent import child_setup
from llmgateway.process.stop_signals import (
    RELOAD_SIGNALS,
    STOP_SIGNALS,
    ReloadSignals,
    StopSignals,
)

log = structlog.get_logger("llmgateway.process.supervisor")

POLL_INTERVAL: Final = 0.05
"""Seconds between two looks at the workers' exit statuses and the signals to forward."""

ESCALATE_AFTER: Final = 5.0
"""Seconds after `server.shutdown_timeout` from which a worker still running is killed."""

EXIT_WORKER_FAILED: Final = 1
EXIT_CONFIG_ERROR: Final = 2
"""A worker's exit code when the configuration cannot be used (the CLI's); passed on."""


def worker_command(
    config_path: Path, index: int, host: str | None, port: int | None, supervisor: int
) -> list[str]:
    """The command line of worker `index` of supervisor process `supervisor`."""
    command = [sys.executable, "-m", "llmgateway", "serve", "--config", str(config_path)]
    command += ["--worker-index", str(index), "--supervisor-pid", str(supervisor)]
    if host is not None:
        command += ["--host", host]
    if port is not None:
        command += ["--port", str(port)]
    return command


@final
class _Worker:
    """One worker process, how many of the stop orders it was sent, and the reloads it knows of."""

    __slots__ = ("index", "process", "reloads", "sent")

    def __init__(self, index: int, process: subprocess.Popen[bytes], reloads: int) -> None:
        self.index = index
        self.process = process
        self.sent = 0
        self.reloads = reloads

    def send(self, orders: list[int]) -> None:
        """Send the orders (signal numbers) it has not received yet."""
        for signum in orders[self.sent :]:
            with suppress(ProcessLookupError):  # exited since the last look
                os.kill(self.process.pid, signum)
        self.sent = len(orders)

    def reload(self, reloads: int) -> bool:
        """Send SIGHUP when the supervisor received one since the last; True when sent.

        `reloads` counts the SIGHUPs received: several since the last look
        make one reload (the worker reads the file as it is now).
        """
        if reloads <= self.reloads:
            return False
        self.reloads = reloads
        with suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGHUP)
        return True


def supervise(
    config_path: Path,
    workers: int,
    host: str | None,
    port: int | None,
    *,
    signals: StopSignals,
    reloads: ReloadSignals,
    grace: float,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run `workers` worker processes until a signal stops them; return the exit code.

    `signals` are this process's stop signals, `reloads` its SIGHUPs, both
    captured before any worker is started; `grace` is `server.shutdown_timeout`.
    """
    supervisor = os.getpid()
    running: list[_Worker] = []
    for index in range(workers):
        if signals.requested:
            break
        process = _start(config_path, index, host, port, supervisor)
        # A worker reads the file at its start: earlier SIGHUPs are nothing to it.
        running.append(_Worker(index, process, len(reloads.received)))
    log.info("workers_started", workers=len(running), pids=[w.process.pid for w in running])
    # SIGTERM to every worker once one died on its own (appended to the received signals).
    own_orders: list[int] = []
    stop_since: float | None = None
    failed = False
    exit_code = EXIT_WORKER_FAILED
    while running:
        orders = [*signals.received, *own_orders]
        if orders and stop_since is None:
            stop_since = clock()
        for worker in running:
            worker.send(orders)
        if not orders:  # a stopping worker has no use for a reload
            _forward_reloads(running, len(reloads.received))
        time.sleep(POLL_INTERVAL)
        for worker in list(running):
            code = worker.process.poll()
            if code is None:
                continue
            running.remove(worker)
            if not (signals.received or own_orders):
                log.error("worker_died", pid=worker.process.pid, code=code)
                failed = True
                if code == EXIT_CONFIG_ERROR:
                    exit_code = EXIT_CONFIG_ERROR
                own_orders.append(signal.SIGTERM)
            elif code != 0:
                log.error("worker_failed", pid=worker.process.pid, code=code)
                failed = True
        if running and stop_since is not None and clock() >= stop_since + grace + ESCALATE_AFTER:
            _kill(running, clock() - stop_since)
            failed = True
    log.info("workers_stopped", failed=failed)
    return exit_code if failed else 0


def _forward_reloads(running: list[_Worker], reloads: int) -> None:
    """Forward the SIGHUPs received since the last look to every worker (logged)."""
    sent = [worker.process.pid for worker in running if worker.reload(reloads)]
    if sent:
        log.info("reload_forwarded", pids=sent)


def _start(
    config_path: Path, index: int, host: str | None, port: int | None, supervisor: int
) -> subprocess.Popen[bytes]:
    """Start worker `index` with the stop and reload signals blocked from its very fork on.

    They are blocked here, around the fork, so the child never runs a moment
    with them deliverable: one sent to it before its exec is still pending
    when the worker starts handling them. The supervisor's own signals wait
    meanwhile, and arrive when they are unblocked.
    """
    command = worker_command(config_path, index, host, port, supervisor)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, (*STOP_SIGNALS, *RELOAD_SIGNALS))
    try:
        return subprocess.Popen(command, process_group=0, preexec_fn=child_setup(supervisor))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _kill(workers: list[_Worker], waited: float) -> None:
    """SIGKILL every worker still running (they overran their shutdown) and reap them."""
    for worker in workers:
        log.error(
            "worker_killed",
            pid=worker.process.pid,
            worker_index=worker.index,
            waited_seconds=round(waited, 1),
        )
        with suppress(ProcessLookupError):
            worker.process.kill()
    for worker in workers:
        worker.process.wait()
    workers.clear()
