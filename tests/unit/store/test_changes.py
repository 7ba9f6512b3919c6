"""Change notifications: statuses and key-set changes travel without keys, and decode back."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import KeyRecord
from llmgateway.store.changes import (
    KEY_IDS_PER_CHANGE,
    MAX_PAYLOAD,
    MESSAGE_CHARS,
    Changes,
    KeySetChange,
    decode_notification,
    encode_key_changes,
    encode_notifications,
)


def test_a_key_set_change_round_trips() -> None:
    """Added and removed ids of an instance come back as they were sent, with the origin."""
    change = KeySetChange("main", added=(7, 8), removed=(3,))
    (payload,) = encode_key_changes("host/1/ab", [change])
    notification = decode_notification(payload)
    assert notification.origin == "host/1/ab"
    assert notification.changes == Changes(keys=[change])
    assert notification.changes.count == 3


def test_too_many_ids_become_a_reload_of_the_instance() -> None:
    """A change listing more ids than a payload should carry asks for a reload instead."""
    many = tuple(range(1, KEY_IDS_PER_CHANGE + 2))
    (payload,) = encode_key_changes("o", [KeySetChange("main", added=many)])
    assert len(payload) < MAX_PAYLOAD
    (change,) = decode_notification(payload).changes.keys
    assert change == KeySetChange("main", reload=True)
    assert change.needs_store


def test_only_added_keys_or_a_reload_need_the_store() -> None:
    """Removals are applied from the ids alone; additions need the keys' rows."""
    assert not KeySetChange("main", removed=(1,)).needs_store
    assert KeySetChange("main", added=(1,)).needs_store


@pytest.mark.parametrize(
    "payload", ["{}", '{"o": "x", "k": [["main", [1]]]}', '{"o": "x", "k": [["m", ["a"], [], 0]]}']
)
def test_a_foreign_payload_is_refused(payload: str) -> None:
    """Anything that is not one of our notifications is a ValueError, never a crash."""
    with pytest.raises(ValueError, match="not a change notification"):
        decode_notification(payload)


def test_an_empty_delivery_is_false() -> None:
    """A poll that found nothing delivers nothing."""
    assert not Changes()
    assert Changes(keys=[KeySetChange("main", removed=(1,))])
    assert encode_key_changes("o", []) == []


def test_a_status_record_round_trips_without_its_key() -> None:
    """Every status field comes back as sent, times as UTC; the key stays home, the message is cut."""
    at = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    record = KeyRecord(
        key_id=42,
        instance="main",
        key="sk-never-travels-0001",
        model="gpt-x",
        status=Status.RATE_LIMITED,
        last_checked_at=at,
        next_check_at=at + timedelta(minutes=1),
        failing_since=at - timedelta(hours=1),
        consecutive_failures=3,
        status_code=429,
        message="m" * (MESSAGE_CHARS + 50),
        response_ms=321,
        cooldown_until=at + timedelta(seconds=30),
        reason=ErrorReason.OVERLOADED,
    )
    (payload,) = encode_notifications("o", [record])
    assert "sk-never-travels" not in payload
    (received,) = decode_notification(payload).changes.records
    assert received == replace(record, key="", message="m" * MESSAGE_CHARS)


def test_a_status_row_without_a_reason_has_none() -> None:
    """A row from a release that sent no reason decodes with reason None."""
    payload = '{"o": "x", "r": [[1, "main", "m", "valid", 0.0, null, null, 0, 200, "", 5, null]]}'
    (received,) = decode_notification(payload).changes.records
    assert (received.key_id, received.status, received.reason) == (1, Status.VALID, None)
    assert received.last_checked_at == datetime(1970, 1, 1, tzinfo=UTC)
