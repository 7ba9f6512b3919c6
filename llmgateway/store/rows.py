"""What both engines do to values on their way in and out of the database.

Statuses are parsed from their column once, here; key lists and record
batches are normalised the same way for SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import KeyRecord

RECORD_COLUMNS = (
    "s.key_id, k.instance, k.key_value, s.model, s.status, s.last_checked_at, s.next_check_at, "
    "s.failing_since, s.consecutive_failures, s.status_code, s.message, s.response_ms, "
    "s.cooldown_until, s.reason"
)
"""The SELECT list both engines use to build a KeyRecord (same order as its fields)."""


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
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_epoch(value: datetime | None) -> float | None:
    """Seconds since the Unix epoch (SQLite's time columns), or None."""
    return None if value is None else as_utc(value).timestamp()


def from_epoch(value: float | None) -> datetime | None:
    """The timezone-aware UTC datetime of an epoch column, or None."""
    return None if value is None else datetime.fromtimestamp(value, UTC)
