"""The status document: what `/-/status` answers and `llmgateway status --json` prints.

The document is a summary by default, cheap at any pool size: per instance
its `provider_type`, `keys_total`, `models` (the count of each status per
status model), `usable` (per status model, the keys in the pool now) and
`incidents`. Its inputs are tallies (`ModelTally`), kept by the live pool as
statuses change or counted by the store in SQL, never a walk over every key.

The per-key rows come only when asked, one page at a time: rows are ordered
by instance name, key id (the order keys were stored in) and status model,
the order of the store's primary key; a page holds at
most `MAX_PAGE` rows and carries `next_cursor`, an opaque string naming the
last row given, from which the next page goes on (None on the last page).
The cursor names a position, not an offset: keys added or removed between
two pages never make a row appear twice or be skipped, unless it is itself
the one added or removed. Keys are masked here and nowhere else in this output.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

import orjson

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import Status
from llmgateway.core.masking import mask_key
from llmgateway.core.models import KeyRecord
from llmgateway.pool.listing import ModelTally

MAX_PAGE: Final = 1000
"""The most per-key rows one page holds (and the default page size)."""

_STATUS_ORDER: Final = {status: index for index, status in enumerate(Status)}


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """Which serving process answered `/-/status` (several may share one database)."""

    pid: int
    started_at: datetime
    worker_index: int | None = None
    """Its number among the workers of `serve --workers N` (None: not given)."""

    @classmethod
    def current(cls, started_at: datetime, worker_index: int | None = None) -> ProcessInfo:
        """This process, started at `started_at`."""
        return cls(pid=os.getpid(), started_at=started_at, worker_index=worker_index)


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in the per-key rows: after (instance, key id, model)."""

    instance: str
    key_id: int
    model: str

    def encode(self) -> str:
        """The opaque text form given as `next_cursor`."""
        raw = orjson.dumps([self.instance, self.key_id, self.model])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Read a cursor given back by a client; ValueError when it is not one of ours."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            instance, key_id, model = orjson.loads(raw)
        except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise ValueError("cursor: not a cursor this gateway gave") from exc
        if not (isinstance(instance, str) and isinstance(model, str) and type(key_id) is int):
            raise ValueError("cursor: not a cursor this gateway gave")
        return cls(instance, key_id, model)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What a client asked of the per-key rows: after which row, how many."""

    after: Cursor | None
    limit: int

    @classmethod
    def parse(cls, limit: str | None, cursor: str | None) -> PageRequest:
        """From the `limit` and `cursor` query parameters; ValueError with a client's message."""
        size = MAX_PAGE
        if limit is not None:
            try:
                size = int(limit)
            except ValueError:
                raise ValueError(f"limit: an integer from 1 to {MAX_PAGE}") from None
            if not 1 <= size <= MAX_PAGE:
                raise ValueError(f"limit: an integer from 1 to {MAX_PAGE}")
        return cls(Cursor.decode(cursor) if cursor else None, size)


def iso_utc(moment: datetime | None) -> str | None:
    """`moment` as ISO-8601 UTC to the second with a `Z` suffix (None stays None)."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).replace(microsecond=0).isoformat()
    return text.replace("+00:00", "Z")


def summary_document(
    providers: Sequence[ProviderConfig],
    tallies: Iterable[ModelTally],
    *,
    keys_total: Mapping[str, int] | None = None,
    incidents: Iterable[Mapping[str, Any]] = (),
    process: ProcessInfo | None = None,
    store_view: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary document of `providers` from their `tallies`.

    Every instance of `providers` appears (in their order) with every one of
    its status models, counts in `Status` order. `keys_total` gives each
    instance's distinct keys; without it, an instance counts the rows of its
    largest status model (every key has a row per status model). Tallies of
    instances not in `providers` are ignored. With `process`, a top-level
    `"process": {"pid", "started_at"}` says which process answered, plus its
    `worker_index` when known and, with `store_view`, the pool's view of the
    shared store (`store_view`: feed, notifications, reconciliations).
    """
    by_instance: dict[str, dict[str, Any]] = {}
    largest: dict[str, int] = {}
    for provider in providers:
        models = ConfigAccessor.status_models(provider)
        by_instance[provider.name] = {
            "provider_type": provider.provider_type.value,
            "keys_total": 0,
            "models": {model: {} for model in models},
            "usable": dict.fromkeys(models, 0),
            "incidents": [],
        }
        largest[provider.name] = 0
    for tally in tallies:
        section = by_instance.get(tally.instance)
        if section is None:
            continue
        counts = {s: n for s, n in tally.counts.items() if n}
        section["models"][tally.model] = {
            status.value: counts[status] for status in sorted(counts, key=_STATUS_ORDER.__getitem__)
        }
        section["usable"][tally.model] = tally.usable
        largest[tally.instance] = max(largest[tally.instance], tally.rows)
    for name, section in by_instance.items():
        section["keys_total"] = largest[name] if keys_total is None else keys_total.get(name, 0)
    for incident in incidents:
        section = by_instance.get(str(incident["instance"]))
        if section is not None:
            section["incidents"].append(dict(incident))
    document: dict[str, Any] = {"providers": by_instance}
    if process is not None:
        about: dict[str, Any] = {"pid": process.pid, "started_at": iso_utc(process.started_at)}
        if process.worker_index is not None:
            about["worker_index"] = process.worker_index
        if store_view is not None:
            about["store_view"] = dict(store_view)
        document["process"] = about
    return document


def add_key_page(
    document: dict[str, Any],
    rows: Iterable[KeyRecord],
    next_cursor: Cursor | None,
    mask: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Put one page of per-key `rows` into a summary `document` (in place; returned).

    Every instance gets its `keys` list (empty when the page holds none of
    its rows); the document gets `next_cursor` (None on the last page).
    """
    providers: dict[str, dict[str, Any]] = document["providers"]
    for section in providers.values():
        section["keys"] = []
    iso = cache(iso_utc)  # a page's rows share many times (a sync's, a bulk check's)
    for record in rows:
        found = providers.get(record.instance)
        if found is not None:
            found["keys"].append(key_row(record, mask, iso))
    document["next_cursor"] = next_cursor.encode() if next_cursor is not None else None
    return document


def key_row(
    record: KeyRecord,
    mask: Callable[[str], str] | None = None,
    iso: Callable[[datetime | None], str | None] = iso_utc,
) -> dict[str, Any]:
    """One per-key row: the key masked, its status, reason, times, code and (masked) message.

    `iso` writes the times (`iso_utc`, or a cached version of it).
    """
    return {
        "key": mask_key(record.key),
        "model": record.model,
        "status": record.status.value,
        "reason": record.reason.value if record.reason is not None else None,
        "last_checked_at": iso(record.last_checked_at),
        "next_check_at": iso(record.next_check_at),
        "failing_since": iso(record.failing_since),
        "status_code": record.status_code,
        "message": mask(record.message) if mask is not None and record.message else record.message,
    }
