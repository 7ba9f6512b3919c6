"""`serve` under faults: a stop signal at any moment, a supervisor killed, a worker frozen.

Each test drives real processes (`python -m llmgateway serve`) the way a
process manager or an operator does, and checks what is left afterwards:
exit codes, processes (every process of a test's gateway carries its
configuration path), the listening port, database connections.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import openai
import pytest

from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.databases import postgres_database as fresh_database
from tests.support.gateway import (
    INSTANCES,
    MODELS,
    OPENAI,
    GatewayConfig,
    ServedGateway,
    SpawnGateway,
    free_port,
    openai_client,
    wait_healthy,
)
from tests.support.processes import (
    gateway_pids,
    holds_file,
    is_zombie_or_gone,
    port_is_free,
    wait_until,
    workers_of,
)

pytestmark = pytest.mark.slow

KEYS = [f"k{i:03d}-fault-key-0123456789-{i:03d}" for i in range(4)]
"""Distinct masks (first and last four characters differ)."""
SHUTDOWN_TIMEOUT = 2.0
STOP_BOUND = SHUTDOWN_TIMEOUT + 5.0 + 8.0
"""Seconds a stopped gateway gets to be gone: the promised bound plus slack for a busy machine."""
WAIT = 20.0
"""Seconds any other bounded wait gets before the test fails."""
PROPAGATION_BOUND = 10.0
"""Seconds a change gets to reach every worker: well under the 30 s full reconciliation."""
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _masked(key: str) -> str:
    return key[:4] + "..." + key[-4:]


def _config_path(config: GatewayConfig) -> Path:
    return config.tmp_path / "providers.yaml"


def _database_file(config: GatewayConfig) -> Path:
    return config.tmp_path / "data" / "llmgateway.db"


async def _exit_code(served: ServedGateway, within: float = STOP_BOUND) -> int:
    try:
        return await asyncio.wait_for(served.process.wait(), timeout=within)
    except TimeoutError:
        pytest.fail(f"serve did not exit within {within} s:\n{served.output()}")


async def _none_left(config: GatewayConfig, within: float = WAIT) -> None:
    """Every process of this gateway is gone (orphans included)."""
    path = _config_path(config)
    await wait_until(
        lambda: not gateway_pids(path), within, f"no process left: {gateway_pids(path)}"
    )


async def _workers(served: ServedGateway, config: GatewayConfig, count: int = 2) -> list[int]:
    path = _config_path(config)
    supervisor = served.process.pid
    await wait_until(
        lambda: len(workers_of(supervisor, path)) == count, WAIT, f"{count} workers started"
    )
    return workers_of(supervisor, path)


def _two_workers(config: GatewayConfig, keeper: bool = False) -> None:
    for key in KEYS:
        config.keys[OPENAI].append(key)
    config.set("server.workers", 2)
    config.set("server.shutdown_timeout", f"{SHUTDOWN_TIMEOUT}s")
    config.set("keeper.enabled", keeper)
    config.set("logging.level", "info")


@pytest.fixture
def held_key_sync(gateway_config: GatewayConfig) -> Iterator[Path]:
    """Hold the SQLite store's `keysync` lock: a starting worker waits in its key sync."""
    lock_path = _database_file(gateway_config).with_name("llmgateway.db.keysync.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield lock_path


async def _waiting_for_the_key_sync(
    served: ServedGateway, config: GatewayConfig, lock_path: Path
) -> list[int]:
    """Both workers: store open (its thread running), waiting for the key-sync lock."""
    workers = await _workers(served, config)
    database = _database_file(config)
    await wait_until(
        lambda: all(holds_file(pid, database) and holds_file(pid, lock_path) for pid in workers),
        WAIT,
        "both workers in their key sync",
    )
    return workers


async def test_sigterm_while_workers_start_up_ends_every_process_with_0(
    fake_upstream: FakeUpstream,
    gateway_config: GatewayConfig,
    spawn_gateway: SpawnGateway,
    held_key_sync: Path,
) -> None:
    """SIGTERM while both workers are in their start-up (store open, key sync pending): exit 0.

    The start-up is cancelled where it stands and the store's connection (and
    its thread) is closed: no worker lingers after logging `stopped`, even
    though the key-sync lock is never released.
    """
    _two_workers(gateway_config)
    served = await spawn_gateway(gateway_config)
    await _waiting_for_the_key_sync(served, gateway_config, held_key_sync)
    served.process.send_signal(signal.SIGTERM)
    assert await _exit_code(served) == 0, served.output()
    await _none_left(gateway_config)
    assert "stopping_during_startup" in served.output()


async def test_a_worker_stopped_in_start_up_exits_and_none_outlives_a_killed_supervisor(
    fake_upstream: FakeUpstream,
    gateway_config: GatewayConfig,
    spawn_gateway: SpawnGateway,
    held_key_sync: Path,
) -> None:
    """In start-up, one worker gets SIGTERM and the supervisor SIGKILL: both workers exit.

    The first stops where its start-up stands; the second, orphaned, gets the
    kernel's parent-death signal. Neither is left running under PID 1.
    """
    _two_workers(gateway_config)
    served = await spawn_gateway(gateway_config)
    first, second = await _waiting_for_the_key_sync(served, gateway_config, held_key_sync)
    os.kill(first, signal.SIGTERM)
    served.process.kill()
    await served.process.wait()
    await wait_until(lambda: is_zombie_or_gone(first), STOP_BOUND, "the signalled worker exits")
    await wait_until(lambda: is_zombie_or_gone(second), STOP_BOUND, "the orphan exits")
    await _none_left(gateway_config)


@asynccontextmanager
async def _postgres(config: GatewayConfig) -> AsyncIterator[str]:
    """A fresh PostgreSQL database as the gateway's store, dropped afterwards; yields its name."""
    async with fresh_database("llmgw_faults", config, pool_max_size=4) as dsn:
        yield dsn.rsplit("/", 1)[1]


@pytest.fixture
async def postgres_database(gateway_config: GatewayConfig) -> AsyncIterator[str]:
    """A fresh PostgreSQL database as the gateway's store; yields its name."""
    async with _postgres(gateway_config) as name:
        yield name


async def _connections(database: str) -> int:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        count: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
        return count
    finally:
        await admin.close()


@pytest.mark.postgres
async def test_sigterm_right_after_a_restart_on_postgres_exits_0(
    fake_upstream: FakeUpstream,
    gateway_config: GatewayConfig,
    spawn_gateway: SpawnGateway,
    postgres_database: str,
) -> None:
    """A restarted `--workers 2` on PostgreSQL, stopped while its workers still start: exit 0.

    The workers get the forwarded SIGTERM before their interpreter could
    handle one: it waits, pending, until they can, then they stop cleanly.
    No process and no database connection is left.
    """
    _two_workers(gateway_config, keeper=True)
    for key in KEYS:
        fake_upstream.set_key(key)
    first = await spawn_gateway(gateway_config, log_name="first.log")
    await wait_healthy(first)
    first.process.send_signal(signal.SIGTERM)
    assert await _exit_code(first) == 0, first.output()

    again = await spawn_gateway(gateway_config, log_name="again.log")
    await _workers(again, gateway_config)
    again.process.send_signal(signal.SIGTERM)
    assert await _exit_code(again) == 0, again.output()
    await _none_left(gateway_config)
    await wait_until_async_zero(postgres_database)


async def wait_until_async_zero(database: str) -> None:
    """No connection to `database` remains (the server notices closed sockets at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while (left := await _connections(database)) != 0:
        if loop.time() > deadline:
            pytest.fail(f"{left} connections to {database} left behind")
        await asyncio.sleep(0.1)


async def _status(url: str) -> dict[str, Any]:
    """`/-/status?keys=1` over a fresh connection (SO_REUSEPORT spreads connections)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(url + "/-/status?keys=1") as response,
    ):
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


async def _every_worker(served: ServedGateway, predicate: Any, within: float) -> None:
    """Wait until both workers' status documents satisfy `predicate` (asked until both are seen)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    seen: set[int] = set()
    while len(seen) < 2:
        document = await _status(served.url)
        pid = document["process"]["pid"]
        if predicate(document):
            seen.add(pid)
        else:
            seen.discard(pid)
        if loop.time() > deadline:
            pytest.fail(f"not every worker within {within} s:\n{document}")


def _key_masks(document: dict[str, Any]) -> set[str]:
    return {k["key"] for k in document["providers"][OPENAI]["keys"]}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(
    request: pytest.FixtureRequest, gateway_config: GatewayConfig
) -> AsyncIterator[str]:
    """The gateway's store: its SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    async with _postgres(gateway_config):
        yield "postgres"


async def test_keys_added_to_and_removed_from_a_key_file_reach_every_worker(
    engine: str,
    fake_upstream: FakeUpstream,
    gateway_config: GatewayConfig,
    spawn_gateway: SpawnGateway,
) -> None:
    """A key removed from its file stops serving on both workers, a key added serves on both.

    The worker that syncs the key file tells the other one through the change
    feed; nothing waits for the periodic reconciliation.
    """
    _two_workers(gateway_config, keeper=True)
    gateway_config.set("keeper.keys_sync_interval", "1s")
    for key in KEYS:
        fake_upstream.set_key(key)
    served = await spawn_gateway(gateway_config)
    await wait_healthy(served)
    everything = {_masked(k) for k in KEYS}
    await _every_worker(served, lambda d: _key_masks(d) == everything, WAIT)

    removed, added = KEYS[0], "k900-fault-key-0123456789-900"
    fake_upstream.set_key(added)
    gateway_config.keys[OPENAI] = [*KEYS[1:], added]
    gateway_config.write()
    expected = {_masked(k) for k in [*KEYS[1:], added]}
    await _every_worker(served, lambda d: _key_masks(d) == expected, PROPAGATION_BOUND)

    fake_upstream.reset()
    async with openai_client(served.url) as client:
        for _ in range(4 * len(KEYS)):
            # A new connection each time: SO_REUSEPORT spreads connections over both workers.
            await client.chat.completions.create(
                model=MODELS[OPENAI],
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"Connection": "close"},
            )
    assert fake_upstream.calls_by_key[removed] == 0
    assert fake_upstream.calls_by_key[added] > 0


async def test_workers_die_with_a_killed_supervisor_and_free_the_port(
    fake_upstream: FakeUpstream, gateway_config: GatewayConfig, spawn_gateway: SpawnGateway
) -> None:
    """SIGKILL on the supervisor: the kernel's parent-death signal stops both workers, port freed."""
    _two_workers(gateway_config, keeper=True)
    for key in KEYS:
        fake_upstream.set_key(key)
    served = await spawn_gateway(gateway_config)
    await wait_healthy(served)
    workers = await _workers(served, gateway_config)
    port = int(gateway_config.tree["server"]["port"])
    assert not port_is_free(port)
    served.process.kill()
    await served.process.wait()
    await wait_until(lambda: all(is_zombie_or_gone(p) for p in workers), WAIT, "workers exit")
    await wait_until(lambda: port_is_free(port), WAIT, "the port is free")
    await _none_left(gateway_config)
    # The kernel's parent-death signal told them at once (the polling watch is the fallback).
    output = served.output()
    assert output.count("supervisor_gone") == 2, output
    assert output.count("noticed_by='parent-death signal'") == 2, output


async def test_a_frozen_worker_is_killed_after_the_deadline_and_serve_exits_1(
    fake_upstream: FakeUpstream, gateway_config: GatewayConfig, spawn_gateway: SpawnGateway
) -> None:
    """A worker that cannot stop (SIGSTOP) is SIGKILLed at shutdown_timeout + 5 s, logged, exit 1."""
    _two_workers(gateway_config)
    served = await spawn_gateway(gateway_config)
    await wait_healthy(served)
    frozen, other = await _workers(served, gateway_config)
    os.kill(frozen, signal.SIGSTOP)
    served.process.send_signal(signal.SIGTERM)
    assert await _exit_code(served) == 1, served.output()
    output = served.output()
    assert "worker_killed" in output
    assert f"pid={frozen}" in output
    assert is_zombie_or_gone(frozen) and is_zombie_or_gone(other)
    await _none_left(gateway_config)


async def test_a_second_sigterm_hurries_a_shutdown_waiting_for_a_stream(
    fake_upstream: FakeUpstream, gateway_config: GatewayConfig, spawn_gateway: SpawnGateway
) -> None:
    """Shutdown waits for a slow stream and a hanging probe; a second SIGTERM cuts both: exit 0.

    Everything the hurried shutdown does fits in its short deadline: no
    watchdog fires.
    """
    fake_upstream.chunk_delay = 1.0  # a 20 s stream
    fake_upstream.set_key(KEYS[0])
    fake_upstream.set_key(KEYS[1], Behaviour.HANG)
    gateway_config.keys[OPENAI] = [KEYS[0], KEYS[1]]
    gateway_config.set("server.shutdown_timeout", "120s")
    gateway_config.set("keeper.enabled", True)
    gateway_config.set("keeper.shutdown_timeout", "60s")
    gateway_config.set("logging.level", "info")
    served = await spawn_gateway(gateway_config)
    await wait_healthy(served)
    await fake_upstream.wait_for_requests(2, within=WAIT)  # both probes sent, one hangs
    async with openai_client(served.url) as client:
        stream = await client.chat.completions.create(
            model=MODELS[OPENAI], messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = aiter(stream)
        await anext(chunks)
        served.process.send_signal(signal.SIGTERM)
        await anext(chunks)  # the graceful shutdown lets the stream go on ...
        served.process.send_signal(signal.SIGTERM)
        with pytest.raises((openai.APIError, httpx.TransportError)):  # ... the second ends it
            async for _ in chunks:
                pass
    assert await _exit_code(served, within=WAIT) == 0, served.output()
    assert "overran" not in served.output()


@pytest.mark.postgres
async def test_a_check_held_by_a_killed_gateway_is_taken_over_by_another(
    fake_upstream: FakeUpstream,
    gateway_config: GatewayConfig,
    spawn_gateway: SpawnGateway,
    postgres_database: str,
) -> None:
    """Two gateways on one database: the one probing a key dies; the other probes it soon after.

    The probe timeout is 4 s (connect 1 s + first byte 2 s + idle 1 s), so the
    lease lasts 4 s and the survivor, checking every second, takes the check
    over within about 5 s, not after minutes.
    """
    key = KEYS[0]
    fake_upstream.set_key(key, Behaviour.HANG)
    gateway_config.keys[OPENAI] = [key]
    gateway_config.set("keeper.enabled", True)
    gateway_config.set("keeper.check_interval", "1s")
    gateway_config.set("logging.level", "info")
    for instance in INSTANCES:
        gateway_config.provider(instance)["timeouts"] = {
            "connect": "1s",
            "first_byte": "2s",
            "idle": "1s",
            "total": "10s",
        }
    holder = await spawn_gateway(gateway_config, log_name="holder.log")
    await wait_healthy(holder)
    await fake_upstream.wait_for_requests(1, within=WAIT)  # the holder's probe hangs
    holder.process.kill()
    await holder.process.wait()
    fake_upstream.set_key(key)

    gateway_config.set("server.port", free_port())
    survivor = await spawn_gateway(gateway_config, log_name="survivor.log")
    await wait_healthy(survivor)
    await wait_until(lambda: fake_upstream.calls_by_key[key] >= 2, WAIT, "the survivor probes")
    assert "keeper_lock" not in survivor.output()
