"""The PostgreSQL change feed: `LISTEN llmgateway_status` on a dedicated connection.

`PostgresStore.record()` and every change of a key set (`sync_keys`) send
`pg_notify` in the same transaction as the write, so
a notification exists exactly when the change was committed. The
listener holds one connection of its own (not from the store's pool: a pooled
connection could be recycled under it), named by `application_name` so an
operator can find it in `pg_stat_activity`. A dropped connection (server
restart, `pg_terminate_backend`, network) is noticed by asyncpg's termination
callback or by a periodic `SELECT 1`, reopened with exponential backoff, and
followed by a resync, since notifications sent meanwhile are lost. The first
connection is followed by a resync too: it covers what changed between the
pool's load and the start of listening.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, final

import asyncpg
import structlog

from llmgateway.core.errors import StoreError
from llmgateway.store.changes import CHANNEL, Deliver, FeedState, Resync, decode_notification

log = structlog.get_logger(__name__)

APPLICATION_NAME: Final = "llmgateway-listener"
"""The `application_name` of every listener connection."""

HEALTH_INTERVAL: Final = 5.0
"""Seconds between two liveness checks of an idle listener connection."""

_CONNECT_FAILURES: Final = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@final
class PgListener:
    """Delivers the changes other processes make, from PostgreSQL notifications.

    Notifications whose origin is `origin` (this process's store) are
    ignored. `run()` loops until cancelled: connect, listen, resync, wait for
    the connection to drop, back off, again.
    """

    def __init__(
        self,
        dsn: str,
        origin: str,
        *,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        health_interval: float = HEALTH_INTERVAL,
    ) -> None:
        self._dsn = dsn
        self._origin = origin
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._health_interval = health_interval
        self.state = FeedState("postgres-notify")
        self._deliver: Deliver | None = None

    async def run(self, deliver: Deliver, resync: Resync) -> None:
        """Listen until cancelled, reconnecting (and resyncing) whenever the connection drops."""
        self._deliver = deliver
        backoff = self._min_backoff
        connected_before = False
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": APPLICATION_NAME}
                )
            except _CONNECT_FAILURES as exc:
                log.warning("listener_connect_failed", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(CHANNEL, self._on_notification)
                self.state.connected = True
                if connected_before:
                    self.state.reconnects += 1
                    log.info("listener_reconnected", reconnects=self.state.reconnects)
                # Whatever was notified while not listening is lost: reload it all.
                try:
                    await resync()
                except StoreError as exc:  # the periodic reconciliation heals it later
                    log.warning("listener_resync_failed", error=str(exc))
                connected_before = True
                backoff = self._min_backoff
                await self._until_lost(conn, lost)
            except _CONNECT_FAILURES as exc:
                log.warning("listener_connection_lost", error=str(exc))
            finally:
                self.state.connected = False
                if not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _until_lost(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection dropped (noticed by asyncpg or by a failed `SELECT 1`)."""
        while not lost.is_set():
            try:
                async with asyncio.timeout(self._health_interval):
                    await lost.wait()
                return
            except TimeoutError:
                pass
            if conn.is_closed():
                return
            async with asyncio.timeout(self._health_interval):
                await conn.fetchval("SELECT 1")

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            notification = decode_notification(str(payload))
        except ValueError as exc:
            log.warning("listener_bad_payload", error=str(exc))
            return
        if notification.origin == self._origin or self._deliver is None:
            return
        self.state.got(notification.changes.count)
        self._deliver(notification.changes)


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    """A termination callback setting `event`."""

    def callback(_conn: object) -> None:
        event.set()

    return callback
