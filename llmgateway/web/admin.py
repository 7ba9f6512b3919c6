"""The operator surface: `/-/healthy`, `/-/ready`, `/-/status`, `/-/events`, `/metrics`.

`install_admin(app)` mounts the `/-/` sub-application, whose middleware is the
one `AdminGuard` (see `admin_guard`): every path there is guarded but the two
public health probes, and nothing under `/-/` is ever proxied. `/metrics`
stays at the root path, behind the same guard. The handlers read the root
application's objects through `request.config_dict`. `metrics_ctx` creates the `Metrics` before the gateway exists (so it
can observe it). On
shutdown every `/-/events` stream is ended first so that open dashboards never
hold the graceful shutdown until its deadline. Whatever these endpoints show
goes through the process's masker once more before it leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse
from prometheus_client import CONTENT_TYPE_LATEST

from llmgateway.core.errors import StoreError
from llmgateway.core.loop_lag import LoopLagMonitor
from llmgateway.core.masking import Masker
from llmgateway.core.models import KeyRecord
from llmgateway.pool.key_pool import PoolEvent
from llmgateway.store.write_queue import WriteQueue
from llmgateway.web.admin_guard import AdminGuard, admin_error
from llmgateway.web.api import build_api_app
from llmgateway.web.keys import (
    ADMIN_GUARD,
    AUTH_FAILURES,
    CLOCK,
    EVENT_STREAMS,
    FOLLOWER,
    GATEWAY,
    HEARTBEAT,
    KEEPER,
    LIVE,
    MASKER,
    METRICS,
    POOL,
    PROCESS,
    STORE,
    WORKER_INDEX,
    WRITE_QUEUE,
)
from llmgateway.web.metrics import Metrics
from llmgateway.web.status import (
    Cursor,
    PageRequest,
    ProcessInfo,
    add_key_page,
    summary_document,
)

log = structlog.get_logger("llmgateway.admin")

HEARTBEAT_INTERVAL: Final = 15.0
"""Seconds between two `: ping` comments on an idle `/-/events` stream."""

READY_TIMEOUT: Final = 2.0
"""Seconds `/-/ready` waits for the store to answer."""

PUBLIC_ROUTES: Final = ("healthy", "ready")
"""The routes of `/-/` served to anyone: the health probes of orchestrators and balancers."""


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


async def healthy_handler(request: web.Request) -> web.Response:
    """`GET /-/healthy`: the process is up (public)."""
    return web.json_response({"status": "ok"})


async def ready_handler(request: web.Request) -> web.Response:
    """`GET /-/ready`: the pool is loaded and the store answers (public; 503 otherwise)."""
    app = request.config_dict
    if STORE not in app or GATEWAY not in app:
        return web.json_response({"status": "starting"}, status=503)
    try:
        await asyncio.wait_for(app[STORE].ping(), timeout=READY_TIMEOUT)
    except (StoreError, TimeoutError) as exc:
        return web.json_response({"status": "store unavailable", "detail": str(exc)}, status=503)
    return web.json_response({"status": "ready"})


async def status_handler(request: web.Request) -> web.Response:
    """`GET /-/status`: the summary of the live pool; `?keys=1`: with a page of keys (503 while starting).

    The summary is read from the pool's tallies; a page (`limit` ≤ 1000,
    default 1000, `cursor` from the previous page's `next_cursor`) costs what
    it holds. A wrong `limit` or `cursor` is a 400.
    """
    app = request.config_dict
    pool = app.get(POOL)
    if pool is None:
        return web.json_response({"status": "starting"}, status=503)
    document = summary_document(
        app[LIVE].current.enabled_providers(),
        pool.tallies(),
        incidents=[incident.as_dict() for incident in pool.incidents()],
        process=app.get(PROCESS),
        store_view=_store_view(app),
    )
    if request.query.get("keys", "0") not in ("", "0", "false"):
        try:
            ask = PageRequest.parse(request.query.get("limit"), request.query.get("cursor"))
        except ValueError as exc:
            return admin_error(400, "bad_request", str(exc))
        after = (
            None if ask.after is None else (ask.after.instance, ask.after.key_id, ask.after.model)
        )
        rows = pool.page(after, ask.limit)
        last = rows[-1] if len(rows) == ask.limit else None
        following = None if last is None else Cursor(last.instance, last.key_id, last.model)
        # The page's 2,000 rows are formatted and encoded on a thread (records are immutable,
        # the masker's index is swapped whole): on the loop, a walk through every page held
        # each request of the stream back by the milliseconds each page took.
        body = await asyncio.to_thread(_page_body, document, rows, following, app[MASKER])
        return web.Response(body=body, content_type="application/json")
    return web.json_response(document, dumps=_dumps)


def _page_body(
    document: dict[str, Any], rows: list[KeyRecord], following: Cursor | None, masker: Masker
) -> bytes:
    """The JSON of `document` with the page `rows` (blocking: for a thread)."""
    return orjson.dumps(add_key_page(document, rows, following, masker.mask_text))


def _store_view(app: Mapping[Any, Any]) -> dict[str, Any] | None:
    """What this process knows of the shared store: its change feed and its keeper's role."""
    follower = app.get(FOLLOWER)
    if follower is None:
        return None
    keeper = app.get(KEEPER)
    role = "off" if keeper is None else ("probing" if keeper.active else "standby")
    return {**follower.view(), "keeper": role}


async def events_handler(request: web.Request) -> web.StreamResponse:
    """`GET /-/events`: one SSE `data:` JSON object per key status change, plus heartbeats.

    At most `server.max_event_subscribers` streams are open at once; one more
    gets 503. A change is announced once it is stored: what a client saw
    announced is in the store even if this process is killed the moment after.
    """
    app = request.config_dict
    pool = app.get(POOL)
    if pool is None:
        return web.json_response({"status": "starting"}, status=503)
    streams = app[EVENT_STREAMS]
    limit = app[LIVE].current.server.max_event_subscribers
    if len(streams) >= limit:
        return admin_error(
            503,
            "too_many_subscribers",
            f"{limit} /-/events subscribers are connected already "
            "(server.max_event_subscribers); retry later",
            **{"Retry-After": "30"},
        )
    response = EventSourceResponse(headers={"X-Accel-Buffering": "no"})
    response.ping_interval = app.get(HEARTBEAT, HEARTBEAT_INTERVAL)
    streams.add(response)  # counted from now on: a slow prepare() holds its place too
    queue = pool.subscribe()
    try:
        await response.prepare(request)
        pump = asyncio.create_task(
            _pump(response, queue, app[MASKER], app.get(WRITE_QUEUE)), name="llmgateway-events"
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
    queue: asyncio.Queue[PoolEvent],
    masker: Masker,
    writes: WriteQueue | None,
) -> None:
    """Send every event of `queue`, masked, each once the writes queued before it are stored."""
    while True:
        event = await queue.get()
        if writes is not None:
            # The pool queued the event's record before announcing it: this mark covers it.
            await writes.written_through(writes.mark())
        try:
            await response.send(masker.mask_text(_dumps(event.as_dict())))
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
    metrics = request.config_dict.get(METRICS)
    body = metrics.render() if metrics is not None else b""
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def not_found_handler(request: web.Request) -> web.Response:
    """Any other path under `/-/`: a JSON 404 (reserved for the gateway, never proxied)."""
    return admin_error(404, "not_found", f"no admin endpoint at {request.path}")


def install_admin(app: web.Application) -> None:
    """Mount the admin surface on `app`: the `/-/` sub-application and `/metrics`.

    Call after `app`'s own on_shutdown handlers are appended (the event
    streams end after them) and before the catch-all proxy route.
    """
    guard = AdminGuard(app[LIVE].current.server.admin_token, app[AUTH_FAILURES], PUBLIC_ROUTES)
    app[ADMIN_GUARD] = guard
    admin = web.Application(middlewares=[guard])
    admin.router.add_get("/healthy", healthy_handler, name="healthy")
    admin.router.add_get("/ready", ready_handler, name="ready")
    admin.router.add_get("/status", status_handler)
    admin.router.add_get("/events", events_handler)
    admin.add_subapp("/api/", build_api_app())
    admin.router.add_route("*", "/{tail:.*}", not_found_handler)
    admin[EVENT_STREAMS] = set()
    admin.on_shutdown.append(_end_event_streams)
    app.add_subapp("/-/", admin)
    app.router.add_get("/metrics", guard.wrap(metrics_handler))


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context creating `app[METRICS]` (must run before the gateway is built)."""
    app[PROCESS] = ProcessInfo.current(
        datetime.fromtimestamp(app[CLOCK](), UTC), app.get(WORKER_INDEX)
    )
    app[METRICS] = Metrics(
        pool=lambda: app.get(POOL),
        queue=lambda: app.get(WRITE_QUEUE),
        auth=lambda: app.get(AUTH_FAILURES),
    )
    yield


async def loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context running the event-loop lag monitor into `app[METRICS]` (after metrics_ctx)."""
    metrics = app[METRICS]
    async with LoopLagMonitor(metrics.loop_lag, own=metrics.loop_own_lag).running():
        yield
