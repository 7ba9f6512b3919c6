"""Serving: load the configuration, install uvloop, run the application until a signal.

Graceful shutdown on SIGTERM or SIGINT is aiohttp's `run_app` sequence, which
this module relies on (issue 7):

1. the listening sockets close (no new connection is accepted);
2. `on_shutdown` runs: the admin module ends every `/-/events` stream;
3. in-flight handlers, streamed responses included, get up to
   `server.shutdown_timeout` seconds to finish, then are cancelled;
4. the cleanup contexts unwind in reverse: the summary task and the keeper
   stop, the HTTP session closes, the write queue is flushed into the store,
   the store closes;
5. `run_server` returns, so `llmgateway serve` exits 0.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from aiohttp import web

from llmgateway.app import create_app
from llmgateway.config.loader import load_config
from llmgateway.core.accessor import ConfigAccessor
from llmgateway.core.logs import configure_logging

log = structlog.get_logger("llmgateway.server")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a main dependency
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def build_server_app(accessor: ConfigAccessor) -> web.Application:
    """The application `run_server` serves: `create_app` plus shutdown logging."""
    app = create_app(accessor)
    timeout = accessor.server.shutdown_timeout

    async def announce(_: web.Application) -> None:
        log.info("shutting down: waiting for in-flight requests", deadline_seconds=timeout)

    app.on_shutdown.append(announce)
    return app


def run_server(config_path: Path, host: str | None = None, port: int | None = None) -> None:
    """Load the configuration and serve until SIGINT/SIGTERM, then shut down gracefully.

    Raises ConfigError (with every problem) before anything starts when the
    configuration does not load; returns normally after a graceful shutdown.
    """
    config = load_config(config_path)
    accessor = ConfigAccessor(config)
    configure_logging(accessor.logging, accessor.secrets())
    _install_uvloop()
    web.run_app(
        build_server_app(accessor),
        host=host or accessor.server.host,
        port=port or accessor.server.port,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=accessor.server.shutdown_timeout,
        print=lambda msg: log.info("listening", detail=msg),
    )
    log.info("stopped")
