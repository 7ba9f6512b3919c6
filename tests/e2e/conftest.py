"""End-to-end fixtures: a real llmgateway in front of the fake upstream (helpers: tests/support/gateway.py)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from llmgateway.web.app import create_app
from tests.fakes.upstream import FakeUpstream
from tests.support.databases import postgres_database
from tests.support.gateway import (
    GatewayConfig,
    RunningGateway,
    ServedGateway,
    ServeGateway,
    SpawnGateway,
    StartGateway,
    build_config,
    wait_healthy,
)
from tests.support.processes import kill_all, serve_command


@pytest.fixture
def gateway_config(tmp_path: Path, fake_upstream: FakeUpstream) -> GatewayConfig:
    """A configuration pointing every instance at the fake upstream, no keys yet."""
    return build_config(tmp_path, fake_upstream.url)


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    """Start the real application in-process (TestServer on 127.0.0.1, as `serve` runs it)."""
    servers: list[TestServer] = []

    async def start(
        config: GatewayConfig, clock: Callable[[], float] | None = None
    ) -> RunningGateway:
        accessor = config.accessor()
        app = create_app(accessor) if clock is None else create_app(accessor, clock=clock)
        # run_server serves with handler_cancellation=True; the in-process server does too.
        server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
        await server.start_server()
        servers.append(server)
        return RunningGateway(url=str(server.make_url("")).rstrip("/"), app=app)

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def spawn_gateway() -> AsyncIterator[SpawnGateway]:
    """Start `python -m llmgateway serve --config ...` without waiting for it.

    On teardown a process still running gets SIGTERM (then SIGKILL after 15 s),
    and any process of the gateway left behind (an orphaned worker) is killed.
    """
    served: list[tuple[ServedGateway, Path]] = []

    async def spawn(
        config: GatewayConfig, *extra: str, log_name: str = "serve.log"
    ) -> ServedGateway:
        path = config.write()
        port = int(config.tree["server"]["port"])
        log_path = config.tmp_path / log_name
        env = {**os.environ, **config.env, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as sink:
            process = await asyncio.create_subprocess_exec(
                *serve_command(path, *extra),
                cwd=str(config.tmp_path),
                env=env,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
            )
        gateway = ServedGateway(f"http://127.0.0.1:{port}", process, log_path)
        served.append((gateway, path))
        return gateway

    yield spawn
    for gateway, _ in served:
        if gateway.process.returncode is None:
            gateway.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(gateway.process.wait(), timeout=15)
            except TimeoutError:
                gateway.process.kill()
                await gateway.process.wait()
    for _, path in served:
        kill_all(path)


@pytest.fixture
async def serve_gateway(spawn_gateway: SpawnGateway) -> ServeGateway:
    """Run `python -m llmgateway serve --config ...` and wait until `/-/healthy` answers."""

    async def serve(config: GatewayConfig) -> ServedGateway:
        gateway = await spawn_gateway(config)
        await wait_healthy(gateway)
        return gateway

    return serve


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw aiohttp client session (for header-level checks), closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_engine(
    request: pytest.FixtureRequest, gateway_config: GatewayConfig
) -> AsyncIterator[str]:
    """Runs the test on both engines: the configuration's SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    async with postgres_database("llmgw_e2e", gateway_config, pool_max_size=4):
        yield "postgres"
