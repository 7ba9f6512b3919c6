"""Every AppKey of the application: what the factory, its lifecycles and the handlers share.

The root application holds them all; the `/-/` sub-application's handlers read
them through `request.config_dict`, which looks in the sub-application first,
then in the root. The lifecycles that fill each key are in `app` (start-up
order there) and `admin` (`METRICS`, `PROCESS`).
"""

from __future__ import annotations

from typing import Final

import aiohttp
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from llmgateway.config.live import LiveConfig
from llmgateway.core.lifecycle import ShutdownClock
from llmgateway.core.masking import Masker
from llmgateway.keeper.follower import PoolFollower
from llmgateway.keeper.keeper import Keeper
from llmgateway.keeper.key_sync import KeySync
from llmgateway.pool.key_pool import Clock, KeyPool
from llmgateway.providers.base import ProviderAdapter
from llmgateway.store.protocol import Store
from llmgateway.store.write_queue import WriteQueue
from llmgateway.web.admin_guard import AdminGuard
from llmgateway.web.auth_failures import AuthFailures
from llmgateway.web.gateway import Gateway
from llmgateway.web.metrics import Metrics
from llmgateway.web.reloading import Reloads
from llmgateway.web.status import ProcessInfo
from llmgateway.web.summary import PoolSummary

# Set by `create_app` before start-up.
LIVE: Final = web.AppKey("live", LiveConfig)
"""The configuration holder: `app[LIVE].current` is the configuration in effect."""
RELOADS: Final = web.AppKey("reloads", Reloads)
ADMIN_GUARD: Final = web.AppKey("admin_guard", AdminGuard)
CLOCK: Final = web.AppKey[Clock]("clock")
WORKER_INDEX: Final = web.AppKey[int | None]("worker_index")
MASKER: Final = web.AppKey("masker", Masker)
AUTH_FAILURES: Final = web.AppKey("auth_failures", AuthFailures)
SHUTDOWN: Final = web.AppKey("shutdown", ShutdownClock)

# Set by the cleanup contexts, in start-up order.
STORE: Final = web.AppKey[Store]("store")
WRITE_QUEUE: Final = web.AppKey("write_queue", WriteQueue)
SESSION: Final = web.AppKey("session", aiohttp.ClientSession)
PROCESS: Final = web.AppKey("process", ProcessInfo)
METRICS: Final = web.AppKey("metrics", Metrics)
"""The application's `Metrics` (created before the gateway, which reports to it)."""
ADAPTERS: Final = web.AppKey[dict[str, ProviderAdapter]]("adapters")
POOL: Final = web.AppKey("pool", KeyPool)
KEY_SYNC: Final = web.AppKey("key_sync", KeySync)
GATEWAY: Final = web.AppKey("gateway", Gateway)
FOLLOWER: Final = web.AppKey("follower", PoolFollower)
KEEPER: Final = web.AppKey("keeper", Keeper)
SUMMARY: Final = web.AppKey("summary", PoolSummary)

# The `/-/` sub-application's own.
EVENT_STREAMS: Final = web.AppKey[set[EventSourceResponse]]("event_streams")
"""The open `/-/events` streams (ended first on shutdown)."""
HEARTBEAT: Final = web.AppKey("events_heartbeat", float)
"""Seconds between two heartbeats of an idle `/-/events` stream (tests shorten it)."""
