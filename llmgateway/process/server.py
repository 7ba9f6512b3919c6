"""Serving: run the application on uvloop until a stop signal, then shut down within a deadline.

A stop signal (SIGTERM or SIGINT, see `llmgateway.process.stop_signals`) may come at any
moment; whatever the process was doing, it ends within
`server.shutdown_timeout` + 5 s with exit code 0:

- before the application starts: nothing is started, `serve` returns;
- during start-up (store, migrations, key sync, pool load): the start-up is
  cancelled where it stands and every part already started is stopped in
  reverse order (the store's connection and its thread included);
- while serving, the graceful sequence runs:
  1. the listening sockets close (no new connection is accepted);
  2. `on_shutdown` runs: every `/-/events` stream ends and the keeper starts
     stopping (no new probe);
  3. in-flight handlers, streamed responses included, get up to
     `server.shutdown_timeout` seconds to finish, then are cancelled;
  4. the cleanup contexts unwind in reverse, each within what is left of the
     deadline (`ShutdownClock`): the keeper and the follower stop, the HTTP
     session closes, the write queue is flushed into the store, the store
     closes;
- a second signal during any of this hurries the shutdown: client
  connections are closed at once, the rest is done within about a second.

A SIGHUP never stops it: once the application serves, each one reloads the
configuration file (see `llmgateway.config.live`); one that arrived during
start-up reloads as soon as it serves.

A watchdog thread ends the process (exit 1, logged) if the shutdown ever
overruns its deadline.

With `workers` > 1 (`serve --workers N` or `server.workers`) this process
becomes a supervisor (see `llmgateway.process.supervisor`): it starts N worker
processes, each `serve --worker-index i --supervisor-pid P`, which bind the
same port with SO_REUSEPORT (the kernel spreads connections across them) and
each run the whole application above with its own live pool. A worker whose
supervisor disappears hurries its shutdown (see `llmgateway.process.parent`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.live import LiveConfig
from llmgateway.core.errors import StoreError
from llmgateway.core.lifecycle import WATCHDOG_SLACK, ShutdownClock, Watchdog
from llmgateway.core.logs import configure_logging
from llmgateway.core.masking import Masker
from llmgateway.core.memory import bound_allocator
from llmgateway.core.threads import background_executor
from llmgateway.process.parent import ParentWatch
from llmgateway.process.stop_signals import (
    ReloadSignals,
    StopSignals,
    process_reload_signals,
    process_stop_signals,
)
from llmgateway.web.admin_guard import TOKEN_HINT
from llmgateway.web.app import create_app
from llmgateway.web.keys import RELOADS

log = structlog.get_logger("llmgateway.process.server")

GIL_SWITCH_INTERVAL: Final = 0.001
"""Seconds a thread may hold the GIL while another waits for it (Python's default: 0.005)."""

KEEPALIVE_TIMEOUT: Final = 75.0
"""Seconds an idle client connection is kept open."""


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loops, whose default executor runs its threads at background priority."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a main dependency
        new_loop = asyncio.new_event_loop
    else:
        new_loop = uvloop.new_event_loop

    def make() -> asyncio.AbstractEventLoop:
        loop = new_loop()
        loop.set_default_executor(background_executor())
        return loop

    return make


def build_server_app(
    live: LiveConfig,
    worker_index: int | None = None,
    shutdown: ShutdownClock | None = None,
    masker: Masker | None = None,
    supervisor_pid: int | None = None,
) -> web.Application:
    """The application `run_server` serves: `create_app` plus shutdown logging."""
    app = create_app(
        live,
        worker_index=worker_index,
        shutdown=shutdown,
        masker=masker,
        supervisor_pid=supervisor_pid,
    )
    timeout = live.current.server.shutdown_timeout

    async def announce(_: web.Application) -> None:
        log.info("shutting_down", deadline_seconds=timeout)

    app.on_shutdown.append(announce)
    return app


def run_server(
    config_path: Path,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    worker_index: int | None = None,
    supervisor_pid: int | None = None,
    signals: StopSignals | None = None,
    *,
    accessor: ConfigAccessor,
    reloads: ReloadSignals | None = None,
) -> None:
    """Serve the configuration loaded from `config_path` until SIGINT/SIGTERM, then stop gracefully.

    `workers` (default `server.workers`) above 1 starts that many worker
    processes under a supervisor, each loading `config_path` itself;
    `worker_index` makes this process one of them (it binds with
    SO_REUSEPORT), `supervisor_pid` names the supervisor it must not
    outlive. `signals` are the stop signals captured since the command
    began (captured here when not given), `reloads` its SIGHUPs (likewise).
    Returns normally after a stop signal; raises SystemExit(1) when a worker
    died unexpectedly, and the start-up's own error when it failed (after
    stopping whatever it had started).
    """
    if signals is None:
        signals = process_stop_signals()
    if reloads is None:
        reloads = process_reload_signals()
    since = len(reloads.received)  # the configuration was loaded just before
    masker = configure_logging(accessor.logging, accessor.secrets())
    if worker_index is None:  # said once, by the process the user started
        _warn_about(accessor)
    count = workers if workers is not None else accessor.server.workers
    if worker_index is None and count > 1:
        from llmgateway.process.supervisor import supervise

        code = supervise(
            config_path,
            count,
            host,
            port,
            signals=signals,
            reloads=reloads,
            grace=accessor.server.shutdown_timeout,
        )
        if code:
            raise SystemExit(code)
        return
    shutdown = ShutdownClock(accessor.server.shutdown_timeout)
    parent = _watched(shutdown, signals, supervisor_pid)
    if shutdown.begun:
        log.info("stopped_before_startup", worker_index=worker_index)
        return
    # The event loop's thread waits for the GIL whenever a worker thread runs Python (an
    # import's key checks, a sync's hashing): every wait is up to the switch interval, and a
    # request needs a few. The default 5 ms added 20 ms and more to requests during a
    # 100,000-key import; 1 ms costs nothing while the loop's thread runs alone.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    bound_allocator()  # what a large pool's start-up or an import frees goes back to the system
    live = LiveConfig(accessor, path=config_path)
    app = build_server_app(live, worker_index, shutdown, masker, supervisor_pid)
    serving = _serve(
        app,
        (signals, reloads, since),
        shutdown,
        parent,
        host=host or accessor.server.host,
        port=port or accessor.server.port,
        reuse_port=True if worker_index is not None else None,
        worker_index=worker_index,
    )
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serving)
    log.info("stopped", worker_index=worker_index)


def _warn_about(accessor: ConfigAccessor) -> None:
    """The configuration's warnings, said once by the process the user started."""
    for text in accessor.deprecations:
        log.warning("config_deprecated", detail=text)
    if not accessor.server.admin_token:
        log.warning("admin_surface_loopback_only", hint=TOKEN_HINT)


def _watched(
    shutdown: ShutdownClock, signals: StopSignals, supervisor_pid: int | None
) -> ParentWatch | None:
    """Arm the watchdog on the shutdown's deadline, follow the stop signals and the supervisor.

    Returns the watch of the supervisor (None for a process of its own); an
    orphan found already begins its shutdown here.
    """
    watchdog = Watchdog()
    shutdown.on_change(lambda: watchdog.arm(shutdown.deadline + WATCHDOG_SLACK, "serve"))
    parent = ParentWatch(supervisor_pid) if supervisor_pid is not None else None
    _follow_signals(signals, shutdown, parent)
    if parent is not None and parent.orphaned():
        orphaned(shutdown, parent, "start-up")
    return parent


def _follow_signals(
    signals: StopSignals, shutdown: ShutdownClock, parent: ParentWatch | None
) -> None:
    """The first stop signal begins the shutdown; a later one, or an orphan's, hurries it."""

    def on_signal(signum: int) -> None:
        if parent is not None and parent.orphaned():
            orphaned(shutdown, parent, "parent-death signal")
        elif shutdown.begun:
            shutdown.hurry()
        else:
            shutdown.begin()

    signals.on_signal(on_signal)
    for signum in signals.received:  # arrived before this process knew how to stop
        on_signal(signum)


def orphaned(shutdown: ShutdownClock, parent: ParentWatch, noticed_by: str) -> None:
    """The supervisor is gone: nobody waits for this worker any more, hurry (logged once)."""
    if not shutdown.hurried:
        log.warning("supervisor_gone", supervisor=parent.supervisor, noticed_by=noticed_by)
    shutdown.hurry()


async def _serve(
    app: web.Application,
    captured: tuple[StopSignals, ReloadSignals, int],
    shutdown: ShutdownClock,
    parent: ParentWatch | None,
    *,
    host: str,
    port: int,
    reuse_port: bool | None,
    worker_index: int | None,
) -> None:
    """Start `app`, serve until the shutdown begins, then stop whatever was started.

    `captured` are the stop signals, the reload signals and how many of these
    had arrived when the configuration was loaded (one arrived since then
    reloads as soon as the application serves).
    """
    signals, reloads, since = captured
    stopping = asyncio.Event()
    shutdown.on_change(stopping.set)
    if shutdown.begun:
        stopping.set()
    signals.attach(asyncio.get_running_loop())
    watcher = None
    if parent is not None:
        watcher = asyncio.create_task(
            parent.watch(lambda: orphaned(shutdown, parent, "parent watch")),
            name="llmgateway-parent",
        )
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        shutdown_timeout=shutdown.grace,
    )
    try:
        if await _unless_stopping(runner.setup(), stopping, "start-up"):
            site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
            if await _unless_stopping(site.start(), stopping, "binding"):
                log.info("listening", address=f"http://{host}:{port}", worker_index=worker_index)
                _follow_reloads(app, reloads, since, shutdown)
                await stopping.wait()
    finally:
        shutdown.begin()  # also after a failed start-up
        try:
            await _clean_up(runner, shutdown)
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            signals.detach()
            reloads.detach()


def _follow_reloads(
    app: web.Application, reloads: ReloadSignals, since: int, shutdown: ShutdownClock
) -> None:
    """From now on (the application serves) every SIGHUP reloads it, until the shutdown begins."""
    trigger = app[RELOADS]

    def on_signal(signum: int) -> None:
        if not shutdown.begun:
            trigger.on_signal(signum)

    reloads.attach(asyncio.get_running_loop())
    reloads.on_signal(on_signal)
    if len(reloads.received) > since:  # arrived during start-up: the file may be newer
        on_signal(reloads.numbers[0])


async def _unless_stopping(step: Awaitable[None], stopping: asyncio.Event, what: str) -> bool:
    """Run `step` unless the shutdown begins first; then cancel it and return False.

    An exception of `step` itself propagates (a failed start-up). One raised
    while it unwinds from the cancellation (a store that could not finish a
    statement cleanly) is logged: the shutdown goes on.
    """
    task = asyncio.ensure_future(step)
    waiter = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        task.result()
        return True
    log.info("stopping_during_startup", step=what)
    task.cancel()
    with suppress(asyncio.CancelledError):
        try:
            await task
        except (StoreError, OSError) as exc:  # unwinding a cancelled step: log, go on stopping
            log.warning("startup_step_failed_while_cancelled", step=what, error=repr(exc))
    return False


async def _clean_up(runner: web.AppRunner, shutdown: ShutdownClock) -> None:
    """Stop listening, close client connections when hurried, then unwind the application."""
    for site in list(runner.sites):
        await site.stop()

    def close_connections() -> None:
        server = runner.server
        if shutdown.hurried and server is not None:
            for connection in server.connections:
                connection.force_close()  # its handler is cancelled (handler_cancellation)

    shutdown.on_change(close_connections)
    close_connections()
    await runner.cleanup()
