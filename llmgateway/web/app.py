"""The aiohttp application factory: wires config, store, pool, keeper and routes.

Each resource has one cleanup-context generator, appended in start-up order
(store → write queue → HTTP session → pool and gateway → follower → keeper);
shutdown runs them in reverse, so the keeper stops before the session closes
and the write queue is flushed before the store closes. Every step of the
shutdown takes at most what the application's `ShutdownClock` still allows
(the process must be gone `server.shutdown_timeout` + 5 s after its stop
signal); the keeper starts stopping as soon as the shutdown begins, while
in-flight requests finish.

Several processes may share the database (`--workers N`, or several hosts):
the start-up key sync runs under the store's `keysync` lock, the follower
applies what the other processes record to this process's pool, and the
keeper leases its due checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import structlog
from aiohttp import web

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.core.errors import StoreError
from llmgateway.core.logs import active_masker
from llmgateway.core.masking import Masker
from llmgateway.keeper.follower import PoolFollower
from llmgateway.keeper.keeper import Keeper
from llmgateway.keeper.keyfiles import sync_instance_keys, sync_providers, warn_if_keyless
from llmgateway.pool.key_pool import Clock, KeyPool
from llmgateway.process.lifecycle import ShutdownClock
from llmgateway.providers import build_adapter
from llmgateway.providers.base import ProviderAdapter
from llmgateway.store import open_store
from llmgateway.store.protocol import Store
from llmgateway.store.write_queue import WriteQueue
from llmgateway.web.auth_failures import AuthFailures
from llmgateway.web.gateway import Gateway
from llmgateway.web.metrics import METRICS

log = structlog.get_logger("llmgateway.web.app")

ACCESSOR: web.AppKey[ConfigAccessor] = web.AppKey("accessor")
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
STORE: web.AppKey[Store] = web.AppKey("store")
WRITE_QUEUE: web.AppKey[WriteQueue] = web.AppKey("write_queue")
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session")
ADAPTERS: web.AppKey[dict[str, ProviderAdapter]] = web.AppKey("adapters")
POOL: web.AppKey[KeyPool] = web.AppKey("pool")
GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")
KEEPER: web.AppKey[Keeper] = web.AppKey("keeper")
FOLLOWER: web.AppKey[PoolFollower] = web.AppKey("follower")
WORKER_INDEX: web.AppKey[int | None] = web.AppKey("worker_index")
MASKER: web.AppKey[Masker] = web.AppKey("masker")
AUTH_FAILURES: web.AppKey[AuthFailures] = web.AppKey("auth_failures")
SHUTDOWN: web.AppKey[ShutdownClock] = web.AppKey("shutdown")

CONNECTION_LIMIT = 1000
"""Upstream connections kept open at most (keep-alive pool across every provider)."""

WRITE_QUEUE_CLOSE_TIMEOUT = 10.0
"""Seconds the final flush of the write queue may take at most (less when the deadline is near)."""

STORE_CLOSE_TIMEOUT = 2.0
"""Seconds closing the store may take at most (it takes milliseconds when the store answers)."""

STORE_CLOSE_RESERVE = 0.3
"""Seconds of the shutdown's deadline the final flush leaves for closing the store."""

FLUSH_RESERVE = 1.0
"""Seconds of the shutdown's deadline the keeper's stop leaves for the final flush."""


class _KeeperStop:
    """The keeper's stop, started when the shutdown begins and awaited by its cleanup."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None


KEEPER_STOP: web.AppKey[_KeeperStop] = web.AppKey("keeper_stop")


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[ACCESSOR].database)
    await store.open()
    app[STORE] = store
    yield
    try:
        await store.close(app[SHUTDOWN].allow(STORE_CLOSE_TIMEOUT))
    except StoreError as exc:  # the connections are dropped anyway when the process exits
        log.warning("store_closed_uncleanly", error=str(exc))


async def _write_queue_ctx(app: web.Application) -> AsyncIterator[None]:
    queue = WriteQueue(app[STORE])
    task = asyncio.create_task(queue.run(), name="write-queue")
    app[WRITE_QUEUE] = queue
    yield
    await queue.close(app[SHUTDOWN].allow(WRITE_QUEUE_CLOSE_TIMEOUT, keep=STORE_CLOSE_RESERVE))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(
        limit=CONNECTION_LIMIT, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        raise_for_status=False,
        trust_env=False,
    )
    app[SESSION] = session
    yield
    await session.close()


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    accessor = app[ACCESSOR]
    store = app[STORE]
    clock = app[CLOCK]
    providers = accessor.enabled_providers()
    masker = app[MASKER]
    adapters = {p.name: build_adapter(p, masker=masker) for p in providers}
    await sync_providers(store, accessor.providers())
    now = datetime.fromtimestamp(clock(), UTC)
    # One process at a time (workers starting together): the later ones find nothing to change.
    async with store.exclusive("keysync", wait=True):
        for provider in providers:
            await sync_instance_keys(store, provider, now)
    keeper = accessor.keeper
    pool = KeyPool(
        providers,
        sink=app[WRITE_QUEUE].put,
        clock=clock,
        confirm_within=keeper.confirm_within,
        server_error_cooldown=keeper.server_error_cooldown,
        incident_window=keeper.incident_window,
        observer=app.get(METRICS),
    )
    records = await store.load_records()
    masker.add(r.key for r in records)
    pool.load(records)
    with_keys = {r.instance for r in records}
    for provider in providers:
        warn_if_keyless(provider, int(provider.name in with_keys))
    app[ADAPTERS] = adapters
    app[POOL] = pool
    app[GATEWAY] = Gateway(
        accessor,
        pool,
        app[SESSION],
        adapters,
        observer=app.get(METRICS),
        masker=masker,
        auth_failures=app[AUTH_FAILURES],
    )
    log.info(
        "key_pool_loaded",
        instances=len(providers),
        records=len(records),
    )
    yield


async def _follower_ctx(app: web.Application) -> AsyncIterator[None]:
    if not app[STORE].shared_between_hosts and app[WORKER_INDEX] is None:
        # One process alone on its SQLite file: nobody else writes there, so there is
        # nothing to follow (and no periodic full reload to pay for).
        yield
        return
    names = [p.name for p in app[ACCESSOR].enabled_providers()]
    follower = PoolFollower(app[STORE], app[POOL], names, clock=app[CLOCK])
    app[FOLLOWER] = follower
    await follower.start()
    yield
    await follower.stop()


async def _keeper_ctx(app: web.Application) -> AsyncIterator[None]:
    accessor = app[ACCESSOR]
    if not accessor.keeper.enabled:
        yield
        return
    adapters: dict[str, ProviderAdapter] = app[ADAPTERS]
    keeper = Keeper(
        accessor,
        app[STORE],
        app[POOL],
        app[SESSION],
        adapters,
        clock=app[CLOCK],
        observer=app.get(METRICS),
        # An SQLite file is shared by the workers of one host only: one of them probes.
        solo=not app[STORE].shared_between_hosts,
    )
    app[KEEPER] = keeper
    stop = app[KEEPER_STOP] = _KeeperStop()
    await keeper.start()
    yield
    if stop.task is None:  # the shutdown did not go through on_shutdown (a cancelled start-up)
        await keeper.stop(_keeper_grace(app))
    else:
        await asyncio.gather(stop.task, return_exceptions=True)  # cancelled when hurried


def _keeper_grace(app: web.Application) -> float:
    """What the keeper's in-flight probes get: `keeper.shutdown_timeout`, within the deadline."""
    shutdown = app[SHUTDOWN]
    wanted = min(app[ACCESSOR].keeper.shutdown_timeout, shutdown.grace)
    return shutdown.allow(wanted, keep=FLUSH_RESERVE + STORE_CLOSE_RESERVE)


async def _begin_shutdown(app: web.Application) -> None:
    """on_shutdown, first: the deadline starts (if no signal started it), the keeper stops probing."""
    shutdown = app[SHUTDOWN]
    shutdown.begin()
    stop = app.get(KEEPER_STOP)
    keeper = app.get(KEEPER)
    if stop is None or keeper is None:
        return
    task = asyncio.create_task(keeper.stop(_keeper_grace(app)), name="keeper-stop")
    stop.task = task

    def hurried() -> None:
        if shutdown.hurried:
            task.cancel()  # in-flight probes are given up at once

    shutdown.on_change(hurried)


async def _healthy(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    app = request.app
    if STORE not in app or GATEWAY not in app:
        return web.json_response({"status": "starting"}, status=503)
    try:
        await asyncio.wait_for(app[STORE].ping(), timeout=2.0)
    except (StoreError, TimeoutError) as exc:
        return web.json_response({"status": "store unavailable", "detail": str(exc)}, status=503)
    return web.json_response({"status": "ready"})


async def _proxy(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].handle(request)


def create_app(
    accessor: ConfigAccessor,
    *,
    clock: Clock = time.time,
    worker_index: int | None = None,
    masker: Masker | None = None,
    shutdown: ShutdownClock | None = None,
) -> web.Application:
    """Build the application: lifecycles in order, reserved routes, then the catch-all proxy.

    `worker_index` is this process's number among `--workers N` (shown by
    `/-/status`). `masker` holds the process's secrets (default: the logging
    configuration's, so that logs and answers mask the same set; a new one
    when logging is not configured); the configuration's tokens and keys are
    added to it here, every stored key when the pool loads. `shutdown` is
    the process's shutdown clock (the server begins it at the stop signal;
    by default the application's own, begun by `on_shutdown`).
    """
    app = web.Application(client_max_size=int(accessor.server.max_body_mb * 1024 * 1024) + 1)
    app[ACCESSOR] = accessor
    app[CLOCK] = clock
    app[WORKER_INDEX] = worker_index
    if masker is None:
        masker = active_masker() or Masker()
    masker.add(accessor.secrets())
    app[MASKER] = masker
    app[AUTH_FAILURES] = AuthFailures(accessor.server.auth_failures_per_minute)
    app[SHUTDOWN] = shutdown or ShutdownClock(accessor.server.shutdown_timeout)
    app.on_shutdown.append(_begin_shutdown)
    # admin reads this module's AppKeys, so it is imported here, not at the top.
    from llmgateway.web.admin import install_admin, metrics_ctx, summary_ctx

    app.cleanup_ctx.extend(
        [
            _store_ctx,
            _write_queue_ctx,
            _session_ctx,
            metrics_ctx,
            _pool_ctx,
            _follower_ctx,
            _keeper_ctx,
            summary_ctx,
        ]
    )
    app.router.add_get("/-/healthy", _healthy)
    app.router.add_get("/-/ready", _ready)
    install_admin(app)
    app.router.add_route("*", "/{tail:.*}", _proxy)
    return app
