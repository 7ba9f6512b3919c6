"""Change notifications: key-set changes travel as ids, never as keys, and decode back."""

from __future__ import annotations

import pytest

from llmgateway.store.changes import (
    KEY_IDS_PER_CHANGE,
    MAX_PAYLOAD,
    Changes,
    KeySetChange,
    decode_notification,
    encode_key_changes,
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
