"""The aiohttp application factory: wires config, store, pool, keeper and routes.

Each resource has one cleanup context, appended in start-up order (store →
write queue → HTTP session → metrics → pool and gateway → follower → keeper
→ summary; the background loops as their own `running()`);
shutdown runs them in reverse, so the keeper stops before the session closes
and the write queue is flushed before the store closes. Every step of the
shutdown takes at most what the application's `ShutdownClock` still allows
(the process must be gone `server.shutdown_timeout` + 5 s after its stop
signal); the keeper starts stopping as soon as the shutdown begins, while
in-flight requests finish.

Several processes may share the database (`--workers N`, or several hosts):
every key sync (the `KeySync`'s, at start-up and then the keeper's) runs
under the store's `keysync` lock, the follower applies what the other
processes record to this process's pool, and the keeper leases its due checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, nullcontext

import aiohttp
import structlog
from aiohttp import web

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.live import LiveConfig
from llmgateway.core.errors import StoreError
from llmgateway.core.lifecycle import ShutdownClock
from llmgateway.core.logs import active_masker
from llmgateway.core.masking import Masker
from llmgateway.core.memory import release_free_memory
from llmgateway.keeper.follower import PoolFollower
from llmgateway.keeper.keeper import Keeper
from llmgateway.keeper.key_sync import KeySync
from llmgateway.pool.key_pool import Clock, KeyPool
from llmgateway.providers import build_adapter
from llmgateway.providers.base import ProviderAdapter
from llmgateway.store import open_store
from llmgateway.store.write_queue import WriteQueue
from llmgateway.web.admin import install_admin, loop_lag_ctx, metrics_ctx
from llmgateway.web.auth_failures import AuthFailures
from llmgateway.web.gateway import Gateway
from llmgateway.web.keys import (
    ADAPTERS,
    AUTH_FAILURES,
    CLOCK,
    FOLLOWER,
    GATEWAY,
    KEEPER,
    KEY_SYNC,
    LIVE,
    MASKER,
    METRICS,
    POOL,
    RELOADS,
    SESSION,
    SHUTDOWN,
    STORE,
    SUMMARY,
    WORKER_INDEX,
    WRITE_QUEUE,
)
from llmgateway.web.reconfigure import AppReload
from llmgateway.web.reloading import Reloads
from llmgateway.web.summary import PoolSummary

log = structlog.get_logger("llmgateway.web.app")

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


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[LIVE].current.database)
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
    accessor = app[LIVE].current
    masker = app[MASKER]
    adapters = {p.name: build_adapter(p, masker=masker) for p in accessor.enabled_providers()}
    pool = KeyPool(accessor, sink=app[WRITE_QUEUE].put, clock=app[CLOCK], observer=app.get(METRICS))
    key_sync = KeySync(accessor, app[STORE], pool, masker, app[CLOCK])
    await key_sync.initial()
    release_free_memory()  # the load's buffers: a large pool's start-up high-water mark
    app[ADAPTERS] = adapters
    app[POOL] = pool
    app[KEY_SYNC] = key_sync
    app[GATEWAY] = Gateway(
        accessor,
        pool,
        app[SESSION],
        adapters,
        observer=app.get(METRICS),
        masker=masker,
        auth_failures=app[AUTH_FAILURES],
    )
    yield


def _follower_ctx(app: web.Application) -> AbstractAsyncContextManager[None]:
    if not app[STORE].shared_between_hosts and app[WORKER_INDEX] is None:
        # One process alone on its SQLite file: nobody else writes there, so there is
        # nothing to follow (and no periodic full reload to pay for).
        return nullcontext()
    names = [p.name for p in app[LIVE].current.enabled_providers()]
    follower = PoolFollower(app[STORE], app[POOL], app[KEY_SYNC], names, clock=app[CLOCK])
    app[FOLLOWER] = follower
    return follower.running()


def _keeper_ctx(app: web.Application) -> AbstractAsyncContextManager[None]:
    accessor = app[LIVE].current
    if not accessor.keeper.enabled:
        return nullcontext()
    adapters: dict[str, ProviderAdapter] = app[ADAPTERS]
    keeper = Keeper(
        accessor,
        app[STORE],
        app[POOL],
        app[SESSION],
        adapters,
        app[KEY_SYNC],
        clock=app[CLOCK],
        observer=app.get(METRICS),
        # An SQLite file is shared by the workers of one host only: one of them probes.
        solo=not app[STORE].shared_between_hosts,
    )
    app[KEEPER] = keeper
    # Its stop begins in on_shutdown (`_begin_shutdown`); after a cancelled start-up, here.
    return keeper.running(lambda: _keeper_grace(app))


def _summary_ctx(app: web.Application) -> AbstractAsyncContextManager[None]:
    summary = app[SUMMARY] = PoolSummary(app[LIVE].current, app[POOL], app.get(METRICS))
    return summary.running()


def _keeper_grace(app: web.Application) -> float:
    """What the keeper's in-flight probes get: `keeper.shutdown_timeout`, within the deadline."""
    shutdown = app[SHUTDOWN]
    wanted = min(app[LIVE].current.keeper.shutdown_timeout, shutdown.grace)
    return shutdown.allow(wanted, keep=FLUSH_RESERVE + STORE_CLOSE_RESERVE)


async def _begin_shutdown(app: web.Application) -> None:
    """on_shutdown, first: the deadline starts (if no signal started it), the keeper stops probing."""
    shutdown = app[SHUTDOWN]
    shutdown.begin()
    keeper = app.get(KEEPER)
    if keeper is None:
        return
    task = keeper.stop_soon(_keeper_grace(app))

    def hurried() -> None:
        if shutdown.hurried:
            task.cancel()  # in-flight probes are given up at once

    shutdown.on_change(hurried)


async def _proxy(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].handle(request)


def create_app(
    config: ConfigAccessor | LiveConfig,
    *,
    clock: Clock = time.time,
    worker_index: int | None = None,
    masker: Masker | None = None,
    shutdown: ShutdownClock | None = None,
    supervisor_pid: int | None = None,
) -> web.Application:
    """Build the application: lifecycles in order, reserved routes, then the catch-all proxy.

    `config` is the configuration, or its holder when it can be reloaded
    (`LiveConfig` with the file's path); `app[LIVE]` holds it either way, and
    the application follows each reload (`AppReload`). `worker_index` is this
    process's number among `--workers N` (shown by `/-/status`),
    `supervisor_pid` its supervisor's pid (a reload applied through the API
    is spread to every worker through it). `masker` holds the process's secrets (default: the logging
    configuration's, so that logs and answers mask the same set; a new one
    when logging is not configured); the configuration's tokens and keys are
    added to it here, every stored key when the pool loads. `shutdown` is
    the process's shutdown clock (the server begins it at the stop signal;
    by default the application's own, begun by `on_shutdown`).
    """
    live = config if isinstance(config, LiveConfig) else LiveConfig(config)
    accessor = live.current
    app = web.Application(client_max_size=int(accessor.server.max_body_mb * 1024 * 1024) + 1)
    app[LIVE] = live
    app[RELOADS] = Reloads(live, supervisor_pid)
    live.follow(AppReload(app))
    app[CLOCK] = clock
    app[WORKER_INDEX] = worker_index
    if masker is None:
        masker = active_masker() or Masker()
    masker.add(accessor.secrets())
    app[MASKER] = masker
    app[AUTH_FAILURES] = AuthFailures(accessor.server.auth_failures_per_minute)
    app[SHUTDOWN] = shutdown or ShutdownClock(accessor.server.shutdown_timeout)
    app.on_shutdown.append(_begin_shutdown)
    app.cleanup_ctx.extend(
        [
            _store_ctx,
            _write_queue_ctx,
            _session_ctx,
            metrics_ctx,
            loop_lag_ctx,
            _pool_ctx,
            _follower_ctx,
            _keeper_ctx,
            _summary_ctx,
        ]
    )
    install_admin(app)
    app.router.add_route("*", "/{tail:.*}", _proxy)
    return app
