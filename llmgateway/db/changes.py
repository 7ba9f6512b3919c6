"""Change feeds: how one gateway process learns the statuses other processes recorded.

Several processes (or hosts) share one database; each keeps its own live pool.
Every batch a process records is announced to the others: on PostgreSQL by
`NOTIFY` in the same transaction as the write (see `PgListener`), on SQLite by
`PRAGMA data_version` moving, after which the rows whose `version` grew are
read (see `SqlitePoller`). A feed hands the records to a `Deliver` callback
and asks for a full `Resync` whenever it may have missed something.

The notification payload is JSON: `{"o": origin, "r": [[key_id, instance,
model, status, last_checked_at, next_check_at, failing_since,
consecutive_failures, status_code, message, response_ms, cooldown_until,
reason], ...]}` with times as epoch seconds; the key itself never travels (records
arrive with `key=""`; the pool keeps its own copy).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, final

import orjson
import structlog

from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.db.rows import from_epoch, parse_reason, parse_status, to_epoch

log = structlog.get_logger(__name__)

CHANNEL: Final = "llmgateway_status"
"""The PostgreSQL notification channel of recorded statuses."""

MAX_PAYLOAD: Final = 7000
"""Bytes per notification payload at most (PostgreSQL refuses 8000 and more)."""

MESSAGE_CHARS: Final = 200
"""Characters of a record's message carried by a notification."""

Deliver = Callable[[list[KeyRecord]], None]
"""Receives the records another process wrote (key values blank on PostgreSQL)."""

Resync = Callable[[], Awaitable[None]]
"""Reloads everything from the store (after a reconnect, when changes may have been missed)."""


@final
class FeedState:
    """What a feed reports about itself for `/-/status` (mutated by the feed only)."""

    __slots__ = ("kind", "connected", "received", "reconnects", "last_received_at")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.connected = False
        self.received = 0
        self.reconnects = 0
        self.last_received_at: float | None = None

    def got(self, count: int) -> None:
        """`count` records arrived now."""
        self.received += count
        self.last_received_at = time.time()

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of the feed's state."""
        return {
            "feed": self.kind,
            "connected": self.connected,
            "records_received": self.received,
            "reconnects": self.reconnects,
            "last_received_at": self.last_received_at,
        }


class ChangeFeed(Protocol):
    """A source of the records other processes write to the shared store."""

    state: FeedState

    async def run(self, deliver: Deliver, resync: Resync) -> None:
        """Deliver other processes' records until cancelled; call `resync` after any gap."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One decoded notification: who sent it and what it recorded."""

    origin: str
    records: list[KeyRecord]


def encode_notifications(origin: str, records: Sequence[KeyRecord]) -> list[str]:
    """The payloads announcing `records`, each under MAX_PAYLOAD bytes."""
    head = len(orjson.dumps({"o": origin, "r": []}))
    payloads: list[str] = []
    rows: list[bytes] = []
    size = head
    for record in records:
        row = orjson.dumps(_row(record))
        if rows and size + len(row) + 1 > MAX_PAYLOAD:
            payloads.append(_payload(origin, rows))
            rows, size = [], head
        rows.append(row)
        size += len(row) + 1
    if rows:
        payloads.append(_payload(origin, rows))
    return payloads


def decode_notification(payload: str) -> Notification:
    """The notification in `payload`; raises ValueError when it is not one of ours."""
    try:
        document = orjson.loads(payload)
        return Notification(str(document["o"]), [_record(row) for row in document["r"]])
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a status notification: {exc}") from exc


def _payload(origin: str, rows: list[bytes]) -> str:
    return (b'{"o":' + orjson.dumps(origin) + b',"r":[' + b",".join(rows) + b"]}").decode()


def _row(record: KeyRecord) -> list[Any]:
    return [
        record.key_id,
        record.instance,
        record.model,
        record.status.value,
        to_epoch(record.last_checked_at),
        to_epoch(record.next_check_at),
        to_epoch(record.failing_since),
        record.consecutive_failures,
        record.status_code,
        record.message[:MESSAGE_CHARS],
        record.response_ms,
        to_epoch(record.cooldown_until),
        record.reason.value if record.reason is not None else None,
    ]


def _record(row: list[Any]) -> KeyRecord:
    return KeyRecord(
        key_id=int(row[0]),
        instance=str(row[1]),
        key="",
        model=str(row[2]),
        status=parse_status(str(row[3])),
        last_checked_at=from_epoch(row[4]),
        next_check_at=from_epoch(row[5]),
        failing_since=from_epoch(row[6]),
        consecutive_failures=int(row[7]),
        status_code=row[8],
        message=str(row[9]),
        response_ms=row[10],
        cooldown_until=from_epoch(row[11]),
        reason=parse_reason(row[12]) if len(row) > 12 else None,
    )


class VersionedStore(Protocol):
    """What `SqlitePoller` needs of the SQLite store."""

    async def data_version(self) -> int:
        """`PRAGMA data_version`: moves when another connection commits."""

    async def change_version(self) -> int:
        """The current value of the change counter."""

    async def changes_since(self, version: int) -> tuple[int, list[KeyRecord]]:
        """The counter now and every record written after `version`."""


@final
class SqlitePoller:
    """The change feed of an SQLite file shared by the workers of one host.

    Every `interval` seconds it asks `PRAGMA data_version` (a read of the
    connection's own state, no I/O when nothing changed); when it moved, the
    rows recorded since the last version seen are read and delivered. Records
    this process wrote come back too: the pool ignores what is not newer.
    """

    def __init__(self, store: VersionedStore, interval: float = 0.5) -> None:
        self._store = store
        self._interval = interval
        self.state = FeedState("sqlite-data-version")

    async def run(self, deliver: Deliver, resync: Resync) -> None:
        """Poll until cancelled; a failed poll is logged, then a resync follows the recovery."""
        since = await self._store.change_version()
        seen = await self._store.data_version()
        self.state.connected = True
        missed = False
        while True:
            await asyncio.sleep(self._interval)
            try:
                if missed:
                    await resync()
                    since = await self._store.change_version()
                    missed = False
                    self.state.reconnects += 1
                current = await self._store.data_version()
                if current == seen:
                    continue
                seen = current
                since, records = await self._store.changes_since(since)
            except StoreError as exc:
                self.state.connected = False
                missed = True
                log.warning("change_poll_failed", error=str(exc))
                continue
            self.state.connected = True
            if records:
                self.state.got(len(records))
                deliver(records)
