"""The pool under the key admin: keys added, dropped, disabled by hand; usage; route inspection."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.pool.events import JobEvent
from tests.unit.pool.test_pool import (
    MODELS,
    START,
    FakeClock,
    Sink,
    fail,
    key_of,
    make_pool,
    records,
)


def disabled(record: KeyRecord, at: float = START) -> KeyRecord:
    """`record` as the store returns it once disabled by hand."""
    moment = datetime.fromtimestamp(at, UTC)
    return replace(record, status=Status.DISABLED, next_check_at=None, last_checked_at=moment)


def test_added_keys_serve_at_once_and_dropped_ones_never_come_back() -> None:
    clock, sink = FakeClock(), Sink()
    pool = make_pool(clock, sink, count=1)
    new = [replace(r, key_id=7, key=key_of(7)) for r in records(1)]
    assert pool.add_records(new) == len(MODELS)
    assert pool.add_records(new) == 0  # already there
    assert {pool.pick("main", "model-a").key_id for _ in range(4)} == {1, 7}
    assert pool.drop_keys([7]) == len(MODELS)
    assert {pool.pick("main", "model-a").key_id for _ in range(4)} == {1}
    pool.apply_remote(new[0])  # another process's stale copy
    assert pool.get("main", "model-a", 7) is None
    for record in [*records(1), *new]:  # a stale read of the store
        pool.merge_stored(record)
    assert pool.get("main", "model-a", 7) is None
    assert sink.written == []


def test_a_key_disabled_by_hand_leaves_the_pool_and_ignores_late_outcomes() -> None:
    clock, sink = FakeClock(), Sink()
    pool = make_pool(clock, sink, count=2)
    events = pool.subscribe()
    first = [r for r in records(2) if r.key_id == 1]
    assert pool.apply_admin([disabled(r) for r in first]) == len(MODELS)
    assert {pool.pick("main", "model-a").key_id for _ in range(4)} == {2}
    assert events.qsize() == len(MODELS)  # the change is announced, not written again
    assert sink.written == []
    # A probe that was already in flight, and a request that still held the key: no effect.
    pool.report(first[0], CheckResult(reason=None, status_code=200), probe=True)
    pool.report(first[0], fail(ErrorReason.INVALID_KEY))
    current = pool.get("main", "model-a", 1)
    assert current is not None and current.status is Status.DISABLED
    enabled = [replace(r, last_checked_at=datetime.fromtimestamp(START + 1, UTC)) for r in first]
    pool.apply_admin(enabled)
    assert {pool.pick("main", "model-a").key_id for _ in range(4)} == {1, 2}


def test_every_attempt_counts_in_the_key_usage_until_drained() -> None:
    clock, sink = FakeClock(), Sink()
    pool = make_pool(clock, sink, count=2)
    record = pool.pick("main", "model-a")
    pool.served(record, 200)
    clock.advance(5)
    pool.served(record, 200)
    pool.report(record, fail(ErrorReason.SERVER_ERROR))
    pool.report(record, CheckResult(reason=None, status_code=200), probe=True)  # not traffic
    assert pool.usage.pending(record.key_id) == (3, 1, datetime.fromtimestamp(START + 5, UTC))
    [delta] = pool.usage.drain()
    assert (delta.key_id, delta.requests, delta.failures) == (record.key_id, 3, 1)
    assert pool.usage.pending(record.key_id) is None


def test_route_names_the_next_key_and_why_the_others_are_skipped() -> None:
    clock, sink = FakeClock(), Sink()
    pool = make_pool(clock, sink, count=3)
    pool.apply_admin([disabled(r) for r in records(3) if r.key_id == 2])
    pool.report(
        next(r for r in records(3) if r.key_id == 3 and r.model == "model-a"),
        fail(ErrorReason.RATE_LIMITED, retry_after=30),
    )
    view = pool.route("main", "model-a")
    assert view.next is not None and view.next.key_id == 1
    whys = {s.key_id: s.why for s in view.skipped}
    assert whys[2] == "status disabled"
    assert whys[3].startswith("cooling down until ")
    assert view.usable == 2
    assert view.counts == {"untested": 1, "disabled": 1, "rate_limited": 1}
    unknown_model = pool.route("main", "no-such-model")
    assert (unknown_model.model, unknown_model.status_model) == ("no-such-model", "model-a")
    assert pool.route("main", "model-b").next is not None


def test_job_progress_reaches_the_subscribers() -> None:
    pool = make_pool(FakeClock(), Sink())
    queue = pool.subscribe()
    pool.announce_job(4, 1, 10, "running")
    event = queue.get_nowait()
    assert isinstance(event, JobEvent)
    assert event.as_dict() == {"job": 4, "done": 1, "total": 10, "state": "running"}
