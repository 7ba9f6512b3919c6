"""Serving: the loaded configuration, uvloop, the application run until a signal.

Graceful shutdown on SIGTERM or SIGINT is aiohttp's `run_app` sequence, which
this module relies on:

1. the listening sockets close (no new connection is accepted);
2. `on_shutdown` runs: the admin module ends every `/-/events` stream;
3. in-flight handlers, streamed responses included, get up to
   `server.shutdown_timeout` seconds to finish, then are cancelled;
4. the cleanup contexts unwind in reverse: the summary task and the keeper
   stop, the HTTP session closes, the write queue is flushed into the store,
   the store closes;
5. `run_server` returns, so `llmgateway serve` exits 0.

With `workers` > 1 (`serve --workers N` or `server.workers`) this process
becomes a supervisor (see `llmgateway.supervisor`): it starts N worker
processes, each `serve --worker-index i`, which bind the same port with
SO_REUSEPORT (the kernel spreads connections across them) and each run the
whole application above with its own live pool.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from aiohttp import web

from llmgateway.app import create_app
from llmgateway.core.accessor import ConfigAccessor
from llmgateway.core.logs import configure_logging
from llmgateway.core.masking import Masker
from llmgateway.services.admin_guard import TOKEN_HINT

log = structlog.get_logger("llmgateway.server")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a main dependency
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def build_server_app(
    accessor: ConfigAccessor, worker_index: int | None = None, masker: Masker | None = None
) -> web.Application:
    """The application `run_server` serves: `create_app` plus shutdown logging."""
    app = create_app(accessor, worker_index=worker_index, masker=masker)
    timeout = accessor.server.shutdown_timeout

    async def announce(_: web.Application) -> None:
        log.info("shutting down: waiting for in-flight requests", deadline_seconds=timeout)

    app.on_shutdown.append(announce)
    return app


def run_server(
    config_path: Path,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    worker_index: int | None = None,
    *,
    accessor: ConfigAccessor,
) -> None:
    """Serve the configuration loaded from `config_path` until SIGINT/SIGTERM, then stop gracefully.

    `workers` (default `server.workers`) above 1 starts that many worker
    processes under a supervisor, each loading `config_path` itself;
    `worker_index` makes this process one of them (it binds with
    SO_REUSEPORT). Returns normally after a graceful shutdown, raises
    SystemExit(1) when a worker died unexpectedly.
    """
    masker = configure_logging(accessor.logging, accessor.secrets())
    if worker_index is None:  # said once, by the process the user started
        for text in accessor.deprecations:
            log.warning("config_deprecated", detail=text)
    if not accessor.server.admin_token and worker_index is None:
        log.warning(
            "no admin token: /-/status, /-/events and /metrics answer loopback clients only",
            hint=TOKEN_HINT,
        )
    count = workers if workers is not None else accessor.server.workers
    if worker_index is None and count > 1:
        from llmgateway.supervisor import supervise

        code = supervise(config_path, count, host, port)
        if code:
            raise SystemExit(code)
        return
    _install_uvloop()
    app = build_server_app(accessor, worker_index, masker)
    if worker_index is not None:
        from llmgateway.supervisor import watch_parent

        app.cleanup_ctx.append(watch_parent)
    web.run_app(
        app,
        host=host or accessor.server.host,
        port=port or accessor.server.port,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=accessor.server.shutdown_timeout,
        reuse_port=True if worker_index is not None else None,
        print=lambda msg: log.info("listening", detail=msg, worker_index=worker_index),
    )
    log.info("stopped", worker_index=worker_index)
