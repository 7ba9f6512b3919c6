"""Serving: load the configuration, install uvloop, run the application until a signal."""

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


def run_server(config_path: Path, host: str | None = None, port: int | None = None) -> None:
    """Load the configuration and serve until SIGINT/SIGTERM (graceful shutdown)."""
    config = load_config(config_path)
    accessor = ConfigAccessor(config)
    configure_logging(accessor.logging, accessor.secrets())
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a main dependency
        pass
    web.run_app(
        create_app(accessor),
        host=host or accessor.server.host,
        port=port or accessor.server.port,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=accessor.server.shutdown_timeout,
        print=lambda msg: log.info("listening", detail=msg),
    )
