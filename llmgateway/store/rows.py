"""The row codec: what both engines do to values on their way in and out of the database.

A `KeyRecord` is read from a row selected with `RECORD_COLUMNS` by
`to_record`, and its status fields are written, in `STATUS_COLUMNS` order, from
`status_columns`; the engines differ only in how a time is stored (SQLite:
epoch seconds; PostgreSQL: timestamptz), which they pass in. Statuses are
parsed from their column once, here; key lists and record batches are
normalised the same way for SQLite and PostgreSQL.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.memory import release
from llmgateway.core.models import KeyRecord
from llmgateway.core.threads import on_thread_when

RECORD_COLUMNS: Final = (
    "s.key_id, k.instance, k.key_value, s.model, s.status, s.last_checked_at, s.next_check_at, "
    "s.failing_since, s.consecutive_failures, s.status_code, s.message, s.response_ms, "
    "s.cooldown_until, s.reason"
)
"""The SELECT list both engines use to build a KeyRecord (same order as its fields)."""

STATUS_COLUMNS: Final = (
    "status",
    "last_checked_at",
    "next_check_at",
    "failing_since",
    "consecutive_failures",
    "status_code",
    "message",
    "response_ms",
    "cooldown_until",
    "reason",
)
"""The columns of `key_model_status` a recorded status writes, in `status_columns` order."""

type TimeIn = Callable[[Any], datetime | None]
"""How an engine reads a time column (None stays None)."""

type TimeOut = Callable[[datetime | None], Any]
"""How an engine writes a time column (None stays None)."""

type Unseal = Callable[[Any], str]
"""How a stored `key_value` becomes the key (`KeyCodec.unseal`)."""


def parse_status(value: str) -> Status:
    """The Status stored as `value`; an unknown string (written by a newer release) is `unknown`."""
    try:
        return Status(value)
    except ValueError:
        return Status.UNKNOWN


def parse_reason(value: str | None) -> ErrorReason | None:
    """The ErrorReason stored as `value`; NULL, or a string this release does not know, is None."""
    if value is None:
        return None
    try:
        return ErrorReason(value)
    except ValueError:
        return None


def to_record(row: Sequence[Any], time_in: TimeIn, unseal: Unseal = str) -> KeyRecord:
    """The KeyRecord of a row laid out as `RECORD_COLUMNS`, its times read with `time_in`.

    `unseal` turns the stored `key_value` into the key (the store's key codec).
    """
    return KeyRecord(
        key_id=row[0],
        instance=row[1],
        key=unseal(row[2]),
        model=row[3],
        status=parse_status(row[4]),
        last_checked_at=time_in(row[5]),
        next_check_at=time_in(row[6]),
        failing_since=time_in(row[7]),
        consecutive_failures=row[8],
        status_code=row[9],
        message=row[10],
        response_ms=row[11],
        cooldown_until=time_in(row[12]),
        reason=parse_reason(row[13]),
    )


RECORDS_ON_THREAD: Final = 500
"""Rows from which `decoded_records` decodes on a thread (fewer: a thread hop costs more)."""


async def decoded_records(
    rows: Sequence[Sequence[Any]], time_in: TimeIn, unseal: Unseal = str
) -> list[KeyRecord]:
    """`to_records`, on a thread when the rows are many.

    A page of 2,000 keys is 4,000 rows: 15 ms of decoding, kept off the event loop.
    """
    return await on_thread_when(len(rows) >= RECORDS_ON_THREAD, to_records, rows, time_in, unseal)


async def sorted_ids(rows: list[Sequence[Any]]) -> list[int]:
    """The first column of `rows` as ints, ascending, `rows` emptied; on a thread when many.

    An import's 100,000 returned ids took 17 ms of the event loop to sort and
    free: on a thread, the rows are freed there too (`release`).
    """
    return await on_thread_when(len(rows) >= RECORDS_ON_THREAD, _sorted_ids_released, rows)


async def unique_ids(ids: Sequence[int]) -> list[int]:
    """`ids` ascending, each once; on a thread when many (100,000 ids: 10 ms of the loop)."""
    return await on_thread_when(len(ids) >= RECORDS_ON_THREAD, _unique_sorted, ids)


def _unique_sorted(ids: Sequence[int]) -> list[int]:
    return sorted(set(ids))


def _sorted_ids_released(rows: list[Sequence[Any]]) -> list[int]:
    ids = sorted(int(row[0]) for row in rows)
    release(rows)
    return ids


def to_records(
    rows: Iterable[Sequence[Any]], time_in: TimeIn, unseal: Unseal = str
) -> list[KeyRecord]:
    """KeyRecords from rows laid out as `RECORD_COLUMNS`, equal values sharing one object.

    `unseal` turns each stored `key_value` into the key (the store's key codec).

    A large pool is mostly repeats: the same instance and model names, a
    key's text on each of its models' rows, the same messages, codes,
    response times and (after a sync or a bulk check) times. Each is kept
    once per call, so the records of 100,000 keys hold one copy of each
    instead of one per row, and a time already seen is not decoded again.
    The look-ups are plain dict subscripts (a miss decodes once,
    `_Decoded`), and each record is filled in through its slots
    (`new_record`): 200,000 rows decode in a fraction of the time the
    generated `__init__` of a frozen dataclass takes.
    """
    shared: _Decoded[Any, Any] = _Decoded(_same)
    times: _Decoded[Any, datetime | None] = _Decoded(time_in)
    times[None] = None
    statuses: _Decoded[str, Status] = _Decoded(parse_status)
    reasons: _Decoded[str | None, ErrorReason | None] = _Decoded(parse_reason)
    reasons[None] = None
    (
        set_key_id,
        set_instance,
        set_key,
        set_model,
        set_status,
        set_last_checked_at,
        set_next_check_at,
        set_failing_since,
        set_consecutive_failures,
        set_status_code,
        set_message,
        set_response_ms,
        set_cooldown_until,
        set_reason,
    ) = _SETTERS
    new = object.__new__
    intern = sys.intern

    records: list[KeyRecord] = []
    append = records.append
    last_id: Any = None
    last_key: Any = None
    for row in rows:
        if row[0] != last_id:  # rows come by key: a key's text once for all its models
            last_id, last_key = row[0], intern(unseal(row[2]))  # shared with key files, masker
        record = new(KeyRecord)
        set_key_id(record, last_id)
        set_instance(record, shared[row[1]])
        set_key(record, last_key)
        set_model(record, shared[row[3]])
        set_status(record, statuses[row[4]])
        set_last_checked_at(record, times[row[5]])
        set_next_check_at(record, times[row[6]])
        set_failing_since(record, times[row[7]])
        set_consecutive_failures(record, row[8])
        set_status_code(record, shared[row[9]])
        set_message(record, shared[row[10]])
        set_response_ms(record, shared[row[11]])
        set_cooldown_until(record, times[row[12]])
        set_reason(record, reasons[row[13]])
        append(record)
    return records


def new_record(*values: Any) -> KeyRecord:
    """A KeyRecord of `values` (every field, in order), filled in through its slots.

    What `to_records` does for each row, for tests to compare with the
    dataclass's own constructor.
    """
    if len(values) != len(_SETTERS):
        raise TypeError(f"a KeyRecord has {len(_SETTERS)} fields, not {len(values)}")
    record = object.__new__(KeyRecord)
    for setter, value in zip(_SETTERS, values, strict=True):
        setter(record, value)
    return record


class _Decoded[K, V](dict[K, V]):
    """A dict that decodes a missing key once with `decode` and keeps the result."""

    __slots__ = ("_decode",)

    def __init__(self, decode: Callable[[K], V]) -> None:
        super().__init__()
        self._decode = decode

    def __missing__(self, raw: K) -> V:
        value = self[raw] = self._decode(raw)
        return value


def _same(value: Any) -> Any:
    return value


def _slot_setters() -> tuple[Callable[[KeyRecord, Any], None], ...]:
    """The `__set__` of each KeyRecord field's slot, in field order.

    A slot's descriptor writes the attribute directly, past the frozen
    dataclass's `__setattr__`; a record built this way equals one built by
    `KeyRecord(...)` with the same values (KeyRecord has no `__post_init__`).
    """
    names = [f.name for f in fields(KeyRecord)]
    if tuple(names) != KeyRecord.__slots__ or hasattr(KeyRecord, "__post_init__"):
        raise TypeError("KeyRecord must be a slotted dataclass without __post_init__")
    return tuple(vars(KeyRecord)[name].__set__ for name in names)


_SETTERS: Final = _slot_setters()
"""How `to_records` fills in a KeyRecord's fields (unpacked there: one per field)."""


def status_columns(records: Sequence[KeyRecord], time_out: TimeOut) -> list[list[Any]]:
    """The values of `STATUS_COLUMNS` for `records`, one list per column, times written with `time_out`.

    Column-wise because PostgreSQL takes each column as one array; zip them
    for the values of one record.
    """
    return [
        [r.status.value for r in records],
        [time_out(r.last_checked_at) for r in records],
        [time_out(r.next_check_at) for r in records],
        [time_out(r.failing_since) for r in records],
        [r.consecutive_failures for r in records],
        [r.status_code for r in records],
        [r.message for r in records],
        [r.response_ms for r in records],
        [time_out(r.cooldown_until) for r in records],
        [r.reason.value if r.reason is not None else None for r in records],
    ]


def unique_keys(keys: Iterable[str]) -> list[str]:
    """`keys` without blanks and repeats, in first-seen order."""
    return list(dict.fromkeys(k for k in keys if k))


def latest_per_row(records: Sequence[KeyRecord]) -> list[KeyRecord]:
    """One record per (key_id, model), the last one given, ordered by (key_id, model).

    A sorted batch makes concurrent writers lock rows in the same order.
    """
    latest = {(r.key_id, r.model): r for r in records}
    return [latest[k] for k in sorted(latest)]


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive datetime is taken to be UTC already."""
    zone = value.tzinfo
    if zone is UTC:  # the common case (every time the gateway makes): nothing to convert
        return value
    if zone is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def as_utc_or_none(value: datetime | None) -> datetime | None:
    """`as_utc(value)`, None staying None (PostgreSQL's time columns)."""
    return None if value is None else as_utc(value)


def same(value: datetime | None) -> datetime | None:
    """`value` unchanged (PostgreSQL's timestamptz arrive as UTC datetimes)."""
    return value


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


_TIME_COLUMNS: Final = frozenset(
    {"s.last_checked_at", "s.next_check_at", "s.failing_since", "s.cooldown_until"}
)

RECORD_COLUMNS_MICROS: Final = ", ".join(
    f"(EXTRACT(EPOCH FROM {c}) * 1000000)::int8" if c in _TIME_COLUMNS else c
    for c in RECORD_COLUMNS.split(", ")
)
"""PostgreSQL: `RECORD_COLUMNS`, each time as whole microseconds since the Unix epoch (int8).

An integer is cheaper to receive and to look up than a timestamptz, and exact
(a float of epoch seconds is not, at microseconds); `from_micros` reads it back.
"""


def from_micros(value: int | None) -> datetime | None:
    """The timezone-aware UTC datetime of a `RECORD_COLUMNS_MICROS` time, or None (exact)."""
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def to_epoch(value: datetime | None) -> float | None:
    """Seconds since the Unix epoch (SQLite's time columns), or None."""
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


def from_epoch(value: float | None) -> datetime | None:
    """The timezone-aware UTC datetime of an epoch column, or None."""
    return None if value is None else datetime.fromtimestamp(value, UTC)
