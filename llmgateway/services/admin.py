"""The operator endpoints `/-/status`, `/-/events` and `/metrics`, and their lifecycles.

`install_admin(app)` adds the three routes (before the catch-all proxy route)
guarded by `server.admin_token` when set; `metrics_ctx` creates the `Metrics`
before the gateway exists (so it can observe it) and `summary_ctx` runs the
periodic summary line. On shutdown every `/-/events` stream is ended first so
that open dashboards never hold the graceful shutdown until its deadline.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse
from prometheus_client import CONTENT_TYPE_LATEST

from llmgateway.app import ACCESSOR, CLOCK, FOLLOWER, KEEPER, POOL, WORKER_INDEX, WRITE_QUEUE
from llmgateway.db.write_queue import WriteQueue
from llmgateway.services.metrics import METRICS, Metrics
from llmgateway.services.pool import KeyPool, StatusEvent
from llmgateway.services.stats import ProcessInfo, build_status_document
from llmgateway.services.summary import PoolSummary

log = structlog.get_logger("llmgateway.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEARTBEAT_INTERVAL: Final = 15.0
"""Seconds between two `: ping` comments on an idle `/-/events` stream."""

PROCESS = web.AppKey("process", ProcessInfo)
HEARTBEAT = web.AppKey("events_heartbeat", float)
EVENT_STREAMS = web.AppKey[set[EventSourceResponse]]("event_streams")
SUMMARY = web.AppKey("summary", PoolSummary)

_BEARER: Final = "bearer "


def _authorized(request: web.Request) -> bool:
    """True when no admin token is configured or the request carries it as a Bearer token."""
    expected = request.app[ACCESSOR].server.admin_token
    if not expected:
        return True
    header = request.headers.get("Authorization", "")
    if header[: len(_BEARER)].lower() != _BEARER:
        return False
    return hmac.compare_digest(header[len(_BEARER) :].strip().encode(), expected.encode())


def _guarded(handler: Handler) -> Handler:
    """`handler` behind the admin token: 401 JSON without it."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not _authorized(request):
            return web.json_response(
                {"error": {"type": "unauthorized", "message": "admin token required"}},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="llmgateway admin"'},
            )
        return await handler(request)

    return guarded


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


async def status_handler(request: web.Request) -> web.Response:
    """`GET /-/status`: the status document of the live pool (503 while starting)."""
    app = request.app
    pool = app.get(POOL)
    if pool is None:
        return web.json_response({"status": "starting"}, status=503)
    document = build_status_document(
        app[ACCESSOR].enabled_providers(), pool.records(), app.get(PROCESS), _store_view(app)
    )
    return web.json_response(document, dumps=_dumps)


def _store_view(app: web.Application) -> dict[str, Any] | None:
    """What this process knows of the shared store: its change feed and its keeper's role."""
    follower = app.get(FOLLOWER)
    if follower is None:
        return None
    keeper = app.get(KEEPER)
    role = "off" if keeper is None else ("probing" if keeper.active else "standby")
    return {**follower.view(), "keeper": role}


async def events_handler(request: web.Request) -> web.StreamResponse:
    """`GET /-/events`: one SSE `data:` JSON object per key status change, plus heartbeats.

    A change is announced once it is stored: what a client saw announced is
    in the store even if this process is killed the moment after.
    """
    app = request.app
    pool = app.get(POOL)
    if pool is None:
        return web.json_response({"status": "starting"}, status=503)
    queue = pool.subscribe()
    response = EventSourceResponse(headers={"X-Accel-Buffering": "no"})
    response.ping_interval = app.get(HEARTBEAT, HEARTBEAT_INTERVAL)
    streams = app[EVENT_STREAMS]
    try:
        await response.prepare(request)
        streams.add(response)
        pump = asyncio.create_task(
            _pump(response, queue, app.get(WRITE_QUEUE)), name="llmgateway-events"
        )
        pump.add_done_callback(lambda _: _stop(response))
        try:
            await response.wait()  # until the client leaves or the server shuts down
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
    finally:
        streams.discard(response)
        pool.unsubscribe(queue)
    return response


async def _pump(
    response: EventSourceResponse,
    queue: asyncio.Queue[StatusEvent],
    writes: WriteQueue | None,
) -> None:
    """Send every event of `queue`, each once the writes queued before it are stored."""
    while True:
        event = await queue.get()
        if writes is not None:
            # The pool queued the event's record before announcing it: this mark covers it.
            await writes.written_through(writes.mark())
        try:
            await response.send(_dumps(event.as_dict()))
        except (ConnectionResetError, RuntimeError):  # client gone, or the response ended
            return


def _stop(response: EventSourceResponse) -> None:
    if response.is_connected():
        response.stop_streaming()


async def _end_event_streams(app: web.Application) -> None:
    """on_shutdown: end every `/-/events` stream so shutdown does not wait for them."""
    streams = app[EVENT_STREAMS]
    for response in list(streams):
        _stop(response)


async def metrics_handler(request: web.Request) -> web.Response:
    """`GET /metrics`: the Prometheus text exposition of this application."""
    metrics = request.app.get(METRICS)
    body = metrics.render() if metrics is not None else b""
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def install_admin(app: web.Application) -> None:
    """Add `/-/status`, `/-/events` and `/metrics` to `app` (call before the catch-all route)."""
    app[EVENT_STREAMS] = set()
    app.router.add_get("/-/status", _guarded(status_handler))
    app.router.add_get("/-/events", _guarded(events_handler))
    app.router.add_get("/metrics", _guarded(metrics_handler))
    app.on_shutdown.append(_end_event_streams)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context creating `app[METRICS]` (must run before the gateway is built)."""
    app[PROCESS] = ProcessInfo.current(
        datetime.fromtimestamp(app[CLOCK](), UTC), app.get(WORKER_INDEX)
    )
    app[METRICS] = Metrics(pool=lambda: app.get(POOL), queue=lambda: app.get(WRITE_QUEUE))
    yield


async def summary_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context running the periodic pool summary (after the pool is loaded)."""
    accessor = app[ACCESSOR]
    pool: KeyPool = app[POOL]
    summary = PoolSummary([p.name for p in accessor.enabled_providers()], pool, app.get(METRICS))
    app[SUMMARY] = summary
    task = asyncio.create_task(
        summary.run(accessor.logging.summary_interval), name="llmgateway-summary"
    )
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
