"""Change feeds: how one gateway process learns what other processes changed in the store.

Several processes (or hosts) share one database; each keeps its own live pool.
Two kinds of change travel between them, both published in the very
transaction that makes them, so a change is announced exactly when it is
committed:

- statuses: every batch `Store.record()` writes;
- key sets: keys added to or removed from an instance (`KeySetChange`). A key
  sync publishes one whenever a key file gained or lost keys, and so must
  every other edit of the keys (an operator adding, deleting or disabling
  keys through an API: a disabled key is a status, an added or deleted one a
  key-set change), through the same engine helpers.

On PostgreSQL the announcement is a `NOTIFY` (see `PgListener`); on SQLite it
is the change counter: status rows and newly inserted rows carry the counter
value of their write, removed keys leave a row in `removed_keys`, and a
process that sees `PRAGMA data_version` move reads what grew (see
`SqlitePoller`). A feed hands each batch to a `Deliver` callback as one
`Changes`, and asks for a full `Resync` whenever it may have missed something
(and once when it starts, for what changed between the pool's load and the
feed's start).

A status notification's payload is JSON: `{"o": origin, "r": [[key_id,
instance, model, status, last_checked_at, next_check_at, failing_since,
consecutive_failures, status_code, message, response_ms, cooldown_until,
reason], ...]}` with times as epoch seconds; a key-set notification's is `{"o": origin,
"k": [[instance, [added key ids], [removed key ids], reload], ...]}`. The key
itself never travels (status records arrive with `key=""`, the pool keeps its
own copy; added keys are read from the store by id).
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
from llmgateway.store.rows import STATUS_COLUMNS, from_epoch, status_columns, to_epoch, to_record

log = structlog.get_logger(__name__)

CHANNEL: Final = "llmgateway_status"
"""The PostgreSQL notification channel of recorded statuses and key-set changes."""

KEY_IDS_PER_CHANGE: Final = 500
"""Key ids a key-set notification lists at most; beyond, it asks for a reload of the instance."""

MAX_PAYLOAD: Final = 7000
"""Bytes per notification payload at most (PostgreSQL refuses 8000 and more)."""

MESSAGE_CHARS: Final = 200
"""Characters of a record's message carried by a notification."""


@dataclass(frozen=True, slots=True)
class KeySetChange:
    """Keys that joined or left one instance's key set.

    `added` names new keys by id: the receiver reads their rows from the
    store (a feed that already delivers their rows, with their keys, leaves it
    empty). `reload` says that too many changed to list them: the receiver
    reloads the whole instance.
    """

    instance: str
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    reload: bool = False

    @property
    def needs_store(self) -> bool:
        """True when applying it takes a read of the store (added keys, a reload)."""
        return bool(self.added) or self.reload


@dataclass(frozen=True, slots=True)
class Changes:
    """One delivery of a feed: status records, then key-set changes, in commit order."""

    records: Sequence[KeyRecord] = ()
    keys: Sequence[KeySetChange] = ()

    def __bool__(self) -> bool:
        return bool(self.records or self.keys)

    @property
    def count(self) -> int:
        """Records plus listed key changes (for the feed's counters)."""
        listed = sum(len(c.added) + len(c.removed) + c.reload for c in self.keys)
        return len(self.records) + listed


Deliver = Callable[[Changes], None]
"""Receives what another process changed (status records' keys blank on PostgreSQL)."""

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
    """A source of the changes other processes make to the shared store."""

    state: FeedState

    async def run(self, deliver: Deliver, resync: Resync) -> None:
        """Deliver other processes' changes until cancelled; call `resync` after any gap."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One decoded notification: who sent it and what it changed."""

    origin: str
    changes: Changes


_MESSAGE: Final = STATUS_COLUMNS.index("message")


def encode_notifications(origin: str, records: Sequence[KeyRecord]) -> list[str]:
    """The payloads announcing `records`, each under MAX_PAYLOAD bytes."""
    head = len(orjson.dumps({"o": origin, "r": []}))
    payloads: list[str] = []
    rows: list[bytes] = []
    size = head
    columns = status_columns(records, to_epoch)
    columns[_MESSAGE] = [message[:MESSAGE_CHARS] for message in columns[_MESSAGE]]
    for record, values in zip(records, zip(*columns, strict=True), strict=True):
        row = orjson.dumps([record.key_id, record.instance, record.model, *values])
        if rows and size + len(row) + 1 > MAX_PAYLOAD:
            payloads.append(_payload(origin, rows))
            rows, size = [], head
        rows.append(row)
        size += len(row) + 1
    if rows:
        payloads.append(_payload(origin, rows))
    return payloads


def encode_key_changes(origin: str, changes: Sequence[KeySetChange]) -> list[str]:
    """The payloads announcing `changes`, one per change; long id lists become a reload."""
    payloads: list[str] = []
    for change in changes:
        if change.reload or len(change.added) + len(change.removed) > KEY_IDS_PER_CHANGE:
            row: list[Any] = [change.instance, [], [], True]
        else:
            row = [change.instance, list(change.added), list(change.removed), False]
        payloads.append(orjson.dumps({"o": origin, "k": [row]}).decode())
    return payloads


def decode_notification(payload: str) -> Notification:
    """The notification in `payload`; raises ValueError when it is not one of ours."""
    try:
        document = orjson.loads(payload)
        origin = str(document["o"])
        if "k" in document:
            keys = [_key_change(row) for row in document["k"]]
            return Notification(origin, Changes(keys=keys))
        return Notification(origin, Changes(records=[_record(row) for row in document["r"]]))
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"not a change notification: {exc}") from exc


def _key_change(row: list[Any]) -> KeySetChange:
    instance, added, removed, reload = row
    return KeySetChange(
        str(instance),
        tuple(int(i) for i in added),
        tuple(int(i) for i in removed),
        bool(reload),
    )


def _payload(origin: str, rows: list[bytes]) -> str:
    return (b'{"o":' + orjson.dumps(origin) + b',"r":[' + b",".join(rows) + b"]}").decode()


def _record(row: list[Any]) -> KeyRecord:
    """The record of a notification row (without its key); a row from before `reason` has none."""
    key_id, instance, model, *status = row
    if len(status) < len(STATUS_COLUMNS) - 1:
        raise ValueError(f"a status row of {len(row)} values")
    status = [*status[: len(STATUS_COLUMNS)], None][: len(STATUS_COLUMNS)]
    return to_record((int(key_id), str(instance), "", str(model), *status), from_epoch)


class VersionedStore(Protocol):
    """What `SqlitePoller` needs of the SQLite store."""

    async def data_version(self) -> int:
        """`PRAGMA data_version`: moves when another connection commits."""

    async def change_version(self) -> int:
        """The current value of the change counter."""

    async def changes_since(self, version: int) -> tuple[int, Changes]:
        """The counter now, and every record written and key removed after `version`."""


@final
class SqlitePoller:
    """The change feed of an SQLite file shared by the workers of one host.

    Every `interval` seconds it asks `PRAGMA data_version` (a read of the
    connection's own state, no I/O when nothing changed); when it moved, the
    rows written (status records and new keys' rows, with their keys) and the
    keys removed since the last version seen are read and delivered. What this
    process wrote comes back too: the pool ignores what is not newer, and a
    key removed twice is removed once.
    """

    def __init__(self, store: VersionedStore, interval: float = 0.5) -> None:
        self._store = store
        self._interval = interval
        self.state = FeedState("sqlite-data-version")

    async def run(self, deliver: Deliver, resync: Resync) -> None:
        """Poll until cancelled; a failed poll is logged, then a resync follows the recovery.

        The first resync comes at once: what changed between the pool's load
        and the first version read here is reloaded.
        """
        since = await self._store.change_version()
        seen = await self._store.data_version()
        self.state.connected = True
        missed = True
        while True:
            await asyncio.sleep(self._interval)
            try:
                if missed:
                    if not self.state.connected:
                        self.state.reconnects += 1
                    since = await self._store.change_version()
                    await resync()
                    missed = False
                current = await self._store.data_version()
                if current == seen:
                    continue
                seen = current
                since, changes = await self._store.changes_since(since)
            except StoreError as exc:
                self.state.connected = False
                missed = True
                log.warning("change_poll_failed", error=str(exc))
                continue
            self.state.connected = True
            if changes:
                self.state.got(changes.count)
                deliver(changes)
