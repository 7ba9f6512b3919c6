"""Route inspection: the key a pick would return next, and why every other key is skipped."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.masking import mask_key
from llmgateway.core.models import KeyRecord
from llmgateway.pool.route import MAX_SKIPPED, inspect_slot, skip_reason

NOW = 1_800_000_000.0


@dataclass
class FakeEntry:
    """An entry as the pool keeps it."""

    record: KeyRecord
    cool_until: float = 0.0
    bench_until: float = 0.0


@dataclass
class FakeSlot:
    """A slot as the pool keeps it: the ring holds only the entries in rotation."""

    ring: deque[FakeEntry] = field(default_factory=deque)
    entries: dict[int, FakeEntry] = field(default_factory=dict)

    def in_rotation(self) -> deque[FakeEntry]:
        return self.ring

    def put(self, entry: FakeEntry, in_ring: bool = True) -> FakeEntry:
        self.entries[entry.record.key_id] = entry
        if in_ring:
            self.ring.append(entry)
        return entry


def record(key_id: int, status: Status = Status.VALID, **extra: object) -> KeyRecord:
    return KeyRecord(
        key_id=key_id,
        instance="main",
        key=f"sk-route-{key_id:04d}-abcdef",
        model="m",
        status=status,
        **extra,  # type: ignore[arg-type]
    )


def test_no_slot_means_nothing_to_serve() -> None:
    view = inspect_slot("main", "m", "m", None, NOW)
    assert (view.usable, view.next, view.skipped, dict(view.counts)) == (0, None, (), {})


def test_the_head_of_the_rotation_is_next_and_unusable_keys_are_skipped() -> None:
    slot = FakeSlot()
    slot.put(FakeEntry(record(1, Status.INVALID_KEY)))
    slot.put(FakeEntry(record(2, cooldown_until=None), cool_until=NOW + 30))
    slot.put(FakeEntry(record(3)))
    slot.put(FakeEntry(record(4)))
    slot.put(FakeEntry(record(5, Status.VERIFYING, reason=ErrorReason.NO_QUOTA)), in_ring=False)
    view = inspect_slot("main", "gpt", "m", slot, NOW)
    assert view.next is not None and view.next.key_id == 3
    assert (view.model, view.status_model) == ("gpt", "m")
    whys = {s.key_id: s.why for s in view.skipped}
    assert set(whys) == {1, 2, 5}  # key 4 only waits for its turn
    assert whys[1] == "status invalid_key"
    assert whys[2].startswith("cooling down until 2027-")
    assert whys[5] == "verifying (no_quota)"
    assert view.usable == 3
    assert dict(view.counts) == {"invalid_key": 1, "valid": 3, "verifying": 1}
    assert all(s.key == mask_key(f"sk-route-{s.key_id:04d}-abcdef") for s in view.skipped)


def test_a_benched_key_is_next_only_when_no_other_key_can_be() -> None:
    slot = FakeSlot()
    slot.put(FakeEntry(record(1), bench_until=NOW + 10))
    slot.put(FakeEntry(record(2)))
    view = inspect_slot("main", "m", "m", slot, NOW)
    assert view.next is not None and view.next.key_id == 2
    assert [s.why.split(" until")[0] for s in view.skipped] == ["benched after server errors"]
    slot.entries[2].record = record(2, Status.NO_QUOTA)
    view = inspect_slot("main", "m", "m", slot, NOW)
    assert view.next is not None and view.next.key_id == 1
    assert [s.key_id for s in view.skipped] == [2]


def test_a_key_whose_cool_down_ended_is_next_before_a_benched_one() -> None:
    slot = FakeSlot()
    slot.put(FakeEntry(record(1), bench_until=NOW + 10))
    slot.put(FakeEntry(record(2, Status.RATE_LIMITED), cool_until=NOW - 1), in_ring=False)
    view = inspect_slot("main", "m", "m", slot, NOW)
    assert view.next is not None and view.next.key_id == 2


def test_disabled_keys_are_skipped_by_status() -> None:
    slot = FakeSlot()
    slot.put(FakeEntry(record(1, Status.NO_ACCESS)), in_ring=False)
    view = inspect_slot("main", "m", "m", slot, NOW)
    assert view.next is None
    assert view.usable == 0
    assert [s.why for s in view.skipped] == ["status no_access"]


def test_at_most_a_hundred_skipped_keys_are_listed() -> None:
    slot = FakeSlot()
    for key_id in range(1, 251):
        slot.put(FakeEntry(record(key_id, Status.INVALID_KEY)), in_ring=False)
    view = inspect_slot("main", "m", "m", slot, NOW)
    assert len(view.skipped) == MAX_SKIPPED
    assert [s.key_id for s in view.skipped] == list(range(1, MAX_SKIPPED + 1))
    assert view.counts == {"invalid_key": 250}


def test_a_verifying_key_says_when_its_probe_is_due() -> None:
    due = datetime.fromtimestamp(NOW + 20, UTC)
    entry = FakeEntry(
        record(1, Status.VERIFYING, reason=ErrorReason.INVALID_KEY, next_check_at=due)
    )
    why = skip_reason(entry, NOW)
    assert why == f"verifying (invalid_key), probe due {due.isoformat().replace('+00:00', 'Z')}"
    assert skip_reason(FakeEntry(record(2)), NOW) is None
