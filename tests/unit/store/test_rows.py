"""The row codec: records decoded from rows equal records built the ordinary way."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import KeyRecord
from llmgateway.store.rows import (
    RECORD_COLUMNS,
    RECORD_COLUMNS_MICROS,
    RECORDS_ON_THREAD,
    decoded_records,
    from_epoch,
    from_micros,
    new_record,
    to_epoch,
    to_records,
)

AT = datetime(2026, 5, 6, 7, 8, 9, 123_456, tzinfo=UTC)


def test_decoded_records_equal_constructed_ones() -> None:
    """Every field of every row lands in its field; unknown texts read as UNKNOWN / None."""
    rows = [
        (7, "inst", "sk-a", "m-1", "valid", to_epoch(AT), None, None, 0, 200, "", 41, None, None),
        (7, "inst", "sk-a", "m-2", "rate_limited", to_epoch(AT), to_epoch(AT), to_epoch(AT),
         2, 429, "slow", None, to_epoch(AT), "rate_limited"),
        (9, "inst", "sk-b", "m-1", "from_the_future", None, None, None, 0, None, "", None,
         None, "a_new_reason"),
    ]  # fmt: skip
    records = to_records(rows, from_epoch, str.upper)
    assert records == [
        KeyRecord(7, "inst", "SK-A", "m-1", Status.VALID, AT, None, None, 0, 200, "", 41),
        KeyRecord(
            7, "inst", "SK-A", "m-2", Status.RATE_LIMITED, AT, AT, AT, 2, 429, "slow", None,
            AT, ErrorReason.RATE_LIMITED,
        ),
        KeyRecord(9, "inst", "SK-B", "m-1", Status.UNKNOWN),
    ]  # fmt: skip
    assert records[0].key is records[1].key
    assert records[1].last_checked_at is records[1].next_check_at
    with pytest.raises(AttributeError):
        records[0].status = Status.NO_QUOTA  # type: ignore[misc]


def test_new_record_fills_every_field_in_order() -> None:
    """new_record(...) equals KeyRecord(...) with the same values; a wrong arity is refused."""
    values = (1, "i", "k", "m", Status.VALID, AT, None, AT, 3, 500, "boom", 12, None, None)
    assert new_record(*values) == KeyRecord(*values)
    assert hash(new_record(*values)) == hash(KeyRecord(*values))
    with pytest.raises(TypeError, match="14 fields"):
        new_record(*values[:-1])


def test_micros_read_back_exactly() -> None:
    """An epoch in microseconds is the UTC datetime it names, to the microsecond."""
    micros = (AT - datetime(1970, 1, 1, tzinfo=UTC)) // datetime.resolution
    assert from_micros(micros) == AT
    assert from_micros(-1) == datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert from_micros(None) is None


def test_micro_columns_differ_from_the_record_columns_only_in_times() -> None:
    """The PostgreSQL load list is RECORD_COLUMNS with the four time columns converted."""
    plain = RECORD_COLUMNS.split(", ")
    micros = RECORD_COLUMNS_MICROS.split(", ")
    changed = [(a, b) for a, b in zip(plain, micros, strict=True) if a != b]
    assert [a for a, _ in changed] == [
        "s.last_checked_at",
        "s.next_check_at",
        "s.failing_since",
        "s.cooldown_until",
    ]
    assert all(b == f"(EXTRACT(EPOCH FROM {a}) * 1000000)::int8" for a, b in changed)


@pytest.mark.parametrize("count", [1, RECORDS_ON_THREAD + 1])
async def test_decoding_many_rows_on_a_thread_gives_the_same_records(count: int) -> None:
    """`decoded_records` is `to_records`, whether it decodes on the loop or on a thread."""
    rows = [
        (i, "inst", f"sk-{i}", "m-1", "valid", to_epoch(AT), None, None, 0, 200, "", 5, None, None)
        for i in range(count)
    ]
    assert await decoded_records(rows, from_epoch, str.upper) == to_records(
        rows, from_epoch, str.upper
    )
