"""The live key pool: per (instance, model) the keys usable now, shared by keeper and gateway.

Picking is O(1) amortised with fair rotation: each slot keeps a ring of key
entries rotated on every pick; condemned or cooling entries are dropped from
the ring lazily when they reach its head, and cooling ones come back from a
heap ordered by the end of their cool-down. Every change is applied in memory
at once, handed to a write sink (the store's write-behind queue) and announced
to subscribers; nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, final

import structlog

from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import ALL_MODELS_MARKER, ErrorReason, Status
from llmgateway.core.errors import KeysCoolingDown, NoUsableKey
from llmgateway.core.logs import mask_key
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.pool.incidents import BACKOFF_START, Incident, IncidentGuard
from llmgateway.pool.policy import next_record, suspect_record

log = structlog.get_logger("llmgateway.pool")

Clock = Callable[[], float]
"""Returns the current time as epoch seconds (time.time); injectable for tests."""

RecordSink = Callable[[KeyRecord], None]
"""Receives every changed record (the write-behind queue's `put`)."""

EVENT_QUEUE_SIZE = 1000

SERVER_ERROR_STREAK: Final = 3
"""Server errors in a row from one key on traffic before it is benched."""


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A key's status changed for a model (what `/-/events` sends)."""

    instance: str
    model: str
    key: str
    old: Status
    new: Status
    reason: str
    """The new status's reason (the suspected one while verifying), or the status itself."""
    message: str
    at: datetime

    def as_dict(self) -> dict[str, str]:
        """The JSON object of a status change on `/-/events` (key already masked)."""
        return {
            "instance": self.instance,
            "model": self.model,
            "key": self.key,
            "old": self.old.value,
            "new": self.new.value,
            "reason": self.reason,
            "message": self.message,
            "at": self.at.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """An incident began or ended (`kind`: incident_started / incident_ended)."""

    kind: str
    incident: Incident
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of an incident on `/-/events`."""
        return {
            "type": self.kind,
            **self.incident.as_dict(),
            "at": self.at.isoformat().replace("+00:00", "Z"),
        }


PoolEvent = StatusEvent | IncidentEvent
"""What `/-/events` subscribers receive."""


class _Entry:
    """One key in one slot: its current record and its place in the rotation.

    `streak` counts server errors in a row seen on traffic; after
    `SERVER_ERROR_STREAK` of them the key is benched until `bench_until`:
    still usable, but picked only when no other key is.
    """

    __slots__ = ("record", "in_ring", "cool_until", "streak", "bench_until")

    def __init__(self, record: KeyRecord, cool_until: float) -> None:
        self.record = record
        self.in_ring = False
        self.cool_until = cool_until
        self.streak = 0
        self.bench_until = 0.0


class _Slot:
    """The keys of one (instance, status model): ring, cool-down heap, index, tallies."""

    __slots__ = ("ring", "cooling", "entries", "usable", "counts", "why")

    def __init__(self) -> None:
        self.ring: deque[_Entry] = deque()
        self.cooling: list[tuple[float, int, _Entry]] = []
        self.entries: dict[int, _Entry] = {}
        self.usable = 0
        """Entries whose status is usable (cooling ones included)."""
        self.counts: Counter[Status] = Counter()
        """Entries per status."""
        self.why: tuple[float, str] | None = None
        """The last "no usable key" explanation and until when it may be reused."""

    def admit(self, entry: _Entry) -> None:
        """Put a usable entry back into rotation (or its cool-down heap)."""
        if not entry.record.status.is_usable:
            return
        if entry.cool_until:
            heapq.heappush(self.cooling, (entry.cool_until, entry.record.key_id, entry))
        elif not entry.in_ring:
            entry.in_ring = True
            self.ring.append(entry)

    def count(self, record: KeyRecord, delta: int) -> None:
        """Add (1) or take away (-1) `record` from the slot's tallies."""
        status = record.status
        self.counts[status] += delta
        if not self.counts[status]:
            del self.counts[status]
        if status.is_usable:
            self.usable += delta
        self.why = None

    def thaw(self, now: float) -> None:
        """Return the entries whose cool-down has ended to the ring."""
        cooling = self.cooling
        while cooling and cooling[0][0] <= now:
            until, _, entry = heapq.heappop(cooling)
            if entry.cool_until == until:
                entry.cool_until = 0.0
                self.admit(entry)

    def soonest(self, now: float) -> float | None:
        """Seconds until the first cooling entry that is still usable returns."""
        for until, _, entry in sorted(self.cooling):
            if entry.cool_until == until and entry.record.status.is_usable:
                return max(until - now, 0.0)
        return None

    def explain(self, instance: str, model: str, now: float) -> str:
        """Why nothing can be picked: the statuses of the slot and the soonest return."""
        if self.why is not None and self.why[0] > now:
            return self.why[1]
        tally: Counter[str] = Counter()
        returns = [until - now for until, _, e in self.cooling if e.cool_until == until]
        for entry in self.entries.values():
            record = entry.record
            if record.status is Status.VERIFYING:
                suspected = record.reason.value if record.reason else "unknown"
                tally[f"{suspected} (verifying)"] += 1
                if record.next_check_at is not None:
                    returns.append(record.next_check_at.timestamp() - now)
            elif not record.status.is_usable or record.status is Status.RATE_LIMITED:
                tally[record.status.value] += 1
        parts = [f"{n} {label}" for label, n in sorted(tally.items(), key=lambda i: (-i[1], i[0]))]
        text = f"no usable key for {instance}/{model}"
        if parts:
            text += ": " + ", ".join(parts)
        if returns:
            text += f" (next back in {max(math.ceil(min(returns)), 0)} s)"
        self.why = (now + 1.0, text)
        return text


@dataclass(frozen=True, slots=True)
class _Instance:
    """What the pool needs to know of a provider instance."""

    config: ProviderConfig
    models: frozenset[str]

    def slot_model(self, model: str) -> str:
        """The status model a request for `model` is served from."""
        if self.config.shared_key_status:
            return ALL_MODELS_MARKER
        return model if model in self.models else self.config.default_model


class AllKeysTried(LookupError):
    """Every usable key of the slot is in the caller's `exclude` list (it may reuse one)."""


class PoolObserver(Protocol):
    """Told about what the pool decides on its own (implemented by the metrics)."""

    def incident_started(self, instance: str, reason: str) -> None:
        """An incident of `instance` for `reason` was declared."""


@final
class KeyPool:
    """Live, in-memory key pool of every enabled provider instance.

    The keeper and the gateway both `pick` and `report` here; the pool decides
    what a result means for the key (scope, cool-down, policy, incidents) so
    that callers never do. A fatal reason seen on traffic makes the key
    `verifying`: out of the pool for its scope at once, probed within
    `confirm_within` (jittered), condemned for the policy's interval only when
    the keeper's probe confirms it. Server errors never condemn a key: after
    `SERVER_ERROR_STREAK` in a row from traffic it is benched for
    `server_error_cooldown`, picked only when no other key is usable.
    """

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        sink: RecordSink | None = None,
        clock: Clock = time.time,
        *,
        confirm_within: float = 30.0,
        server_error_cooldown: float = 30.0,
        incident_window: float = 10.0,
        rng: Callable[[], float] = random.random,
        observer: PoolObserver | None = None,
    ) -> None:
        self._clock = clock
        self._sink = sink
        self._confirm_within = confirm_within
        self._bench_seconds = server_error_cooldown
        self._rng = rng
        self._observer = observer
        self._instances: dict[str, _Instance] = {
            p.name: _Instance(p, frozenset(p.models)) for p in providers
        }
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._streaks: dict[tuple[str, str, int], int] = {}
        self._guard = IncidentGuard(incident_window)
        self._subscribers: list[asyncio.Queue[PoolEvent]] = []

    # -- building ---------------------------------------------------------

    def load(self, records: Iterable[KeyRecord]) -> None:
        """Replace the pool's content with `records` (start-up, from the store)."""
        self._slots.clear()
        for record in records:
            self._add(record)

    def sync_instance(self, instance: str, records: Iterable[KeyRecord]) -> None:
        """Reconcile one instance with the store after a key sync.

        Entries already in the pool keep their (newer) in-memory state; new
        (key, model) rows are added; rows no longer stored are dropped.
        """
        fresh: dict[tuple[str, int], KeyRecord] = {(r.model, r.key_id): r for r in records}
        for (name, model), slot in list(self._slots.items()):
            if name != instance:
                continue
            for key_id in [k for k in slot.entries if (model, k) not in fresh]:
                slot.count(slot.entries.pop(key_id).record, -1)
            slot.ring = deque(e for e in slot.ring if e.record.key_id in slot.entries)
            slot.cooling = [c for c in slot.cooling if c[1] in slot.entries]
            heapq.heapify(slot.cooling)
            if not slot.entries:
                del self._slots[(name, model)]
        for (model, key_id), record in fresh.items():
            existing = self._slots.get((instance, model))
            if existing is None or key_id not in existing.entries:
                self._add(record)
        present = {key_id for _, key_id in fresh}
        for incident in self._guard.forget(instance, present):
            self._incident_over(incident, "its keys left the pool")

    def _add(self, record: KeyRecord) -> None:
        slot = self._slots.setdefault((record.instance, record.model), _Slot())
        cool = record.cooldown_until.timestamp() if record.cooldown_until else 0.0
        entry = _Entry(record, cool if cool > self._clock() else 0.0)
        slot.entries[record.key_id] = entry
        slot.count(record, 1)
        slot.admit(entry)

    # -- the request path -------------------------------------------------

    def slot_model(self, instance: str, model: str) -> str:
        """The status model under which a request for `model` picks its key."""
        return self._instances[instance].slot_model(model)

    def pick(self, instance: str, model: str, exclude: Sequence[int] = ()) -> KeyRecord:
        """A usable key for `model` of `instance`, rotating fairly; never one in `exclude`.

        `model` is a status model (see `slot_model`). A benched key (server
        errors in a row) is returned only when no other key is usable.
        Raises AllKeysTried when every usable key is excluded,
        KeysCoolingDown when every usable key not excluded is cooling down,
        NoUsableKey when there is none at all (its message says why).
        """
        slot = self._slots.get((instance, model))
        if slot is None:
            raise NoUsableKey(f"no key configured for {instance}/{model}")
        now = self._clock()
        if slot.cooling and slot.cooling[0][0] <= now:
            slot.thaw(now)
        ring = slot.ring
        benched: _Entry | None = None
        excluded = False
        for _ in range(len(ring)):
            entry = ring[0]
            if entry.cool_until or not entry.record.status.is_usable:
                ring.popleft()
                entry.in_ring = False
                continue
            ring.rotate(-1)
            if exclude and entry.record.key_id in exclude:
                excluded = True
                continue
            if entry.bench_until:
                if entry.bench_until > now:
                    benched = benched or entry
                    continue
                entry.bench_until = 0.0
            return entry.record
        if benched is not None:
            return benched.record
        if excluded:
            raise AllKeysTried(f"every usable key of {instance}/{model} was tried")
        soonest = slot.soonest(now)
        incident = self._guard.of_instance(instance)
        if soonest is not None:
            text = f"every key of {instance}/{model} is cooling down"
            if incident is not None:
                text = f"{incident.describe()}; {text}"
            raise KeysCoolingDown(text, retry_after=soonest)
        text = slot.explain(instance, model, now)
        if incident is not None:
            text = f"{incident.describe()}; {text}"
        raise NoUsableKey(text)

    def served(self, record: KeyRecord, status_code: int) -> None:
        """A request with `record`'s key succeeded on traffic (cheap when nothing changes)."""
        if self._streaks:
            self._streaks.pop((record.instance, record.model, record.key_id), None)
        if record.status is not Status.VALID:
            self.report(record, CheckResult(reason=None, status_code=status_code))

    def report(
        self, record: KeyRecord, result: CheckResult, *, probe: bool = False
    ) -> Incident | None:
        """Apply the outcome of a call made with `record`'s key for its model.

        From a probe (`probe=True`) the outcome is a verdict: fatal reasons
        condemn the key for their scope (every model of the instance for
        `invalid_key`/`no_access`), a rate limit cools it down, a success
        brings it back, a retryable failure is re-probed before it counts.

        From traffic, a fatal reason only makes the key `verifying` (out of
        the pool for its scope until a probe decides), a rate limit cools it
        down, a server-side failure only counts towards benching, and a
        client-side one changes nothing. When the verdict belongs to an
        incident (see `llmgateway.pool.incidents`) no key is condemned
        and the incident is returned, so the caller can name it.
        """
        reason = result.reason
        if reason is None:
            self._succeeded(record, result, probe)
            return None
        now = self._clock()
        if self._guard.incidents():
            for incident in self._guard.expire(now):
                self._incident_over(incident, "it lasted too long to be a passing incident")
        if probe:
            self._probed_failure(record, result, now)
            return None
        if reason.is_server_error:
            self._server_error(record, now)
            return None
        if not (reason.is_fatal or reason is ErrorReason.RATE_LIMITED):
            return None
        return self._traffic_verdict(record, result, now)

    def _succeeded(self, record: KeyRecord, result: CheckResult, probe: bool) -> None:
        slot = self._slots.get((record.instance, record.model))
        entry = slot.entries.get(record.key_id) if slot else None
        if slot is None or entry is None:
            return
        if not probe and entry.record.status is Status.VALID:
            return
        now = self._clock()
        self._set(slot, entry, self._next(entry.record, result, now, verify=probe), result)
        if self._guard.incidents():
            for incident in self._guard.recovered(record.instance, record.key_id):
                self._incident_over(incident, "its keys work again")

    def _probed_failure(self, record: KeyRecord, result: CheckResult, now: float) -> None:
        reason = result.reason
        assert reason is not None
        incident = self._guard.active(record.instance, reason)
        if incident is not None and record.key_id not in incident.touched:
            current = self._entry(record)
            if current is None or current.record.status is not Status.VALID:
                incident = None  # only keys known to work are shielded by an incident
        if incident is None:
            for slot, entry in self._scope(record, reason):
                self._set(slot, entry, self._next(entry.record, result, now, verify=True), result)
            return
        # While the incident lasts, failing its way is no verdict: recheck on its backoff.
        wait = self._guard.failed_again(incident, record.key_id)
        for slot, entry in self._scope(record, reason):
            self._set(slot, entry, self._held(entry.record, result, now, wait), result)

    def _server_error(self, record: KeyRecord, now: float) -> None:
        streak_key = (record.instance, record.model, record.key_id)
        streak = self._streaks.get(streak_key, 0) + 1
        if streak < SERVER_ERROR_STREAK:
            self._streaks[streak_key] = streak
            return
        self._streaks.pop(streak_key, None)
        entry = self._entry(record)
        if entry is None:
            return
        entry.bench_until = now + self._bench_seconds
        log.info(
            "key_benched",
            instance=record.instance,
            model=record.model,
            key=mask_key(record.key),
            server_errors=streak,
            seconds=self._bench_seconds,
        )

    def _traffic_verdict(
        self, record: KeyRecord, result: CheckResult, now: float
    ) -> Incident | None:
        reason = result.reason
        assert reason is not None
        instance = record.instance
        incident = self._guard.active(instance, reason)
        if incident is not None:
            return incident  # no further key is condemned while it lasts
        incident = None
        current = self._entry(record)
        if current is not None and current.record.status is Status.VALID:
            # Only keys known to work count: untested keys failing are just bad keys.
            valid = self._scope_valid(record, reason)
            incident = self._guard.observe(instance, reason, record.key_id, valid, now)
        if incident is None:
            check_in = self._confirm_within * (0.25 + 0.5 * self._rng())
            for slot, entry in self._scope(record, reason):
                self._set(slot, entry, self._held(entry.record, result, now, check_in), result)
            return None
        for slot, entry in self._scope(record, reason):
            self._set(slot, entry, self._held(entry.record, result, now, BACKOFF_START), result)
        # The keys hit before it was declared: rechecked on the short backoff from now on.
        due = datetime.fromtimestamp(now + BACKOFF_START, UTC)
        for each in self._instance_slots(instance):
            for key_id in incident.touched:
                held = each.entries.get(key_id)
                if held is not None and key_id != record.key_id and held.record.reason is reason:
                    self._set(each, held, replace(held.record, next_check_at=due), result)
        self._incident_begun(incident, now)
        return incident

    def _next(self, old: KeyRecord, result: CheckResult, now: float, *, verify: bool) -> KeyRecord:
        """The policy's next record (a verdict) for `old` after `result` at `now`."""
        config = self._instances[old.instance].config
        return next_record(
            old,
            result,
            datetime.fromtimestamp(now, UTC),
            config.health_policy,
            config.gateway_policy.rate_limit_cooldown,
            verify_retryable=verify,
        )

    def _held(self, old: KeyRecord, result: CheckResult, now: float, check_in: float) -> KeyRecord:
        """`old` held out of the pool without a verdict, rechecked `check_in` seconds from now.

        A fatal reason makes it `verifying`; a rate limit cools it down as
        usual, with its next check moved to `check_in`.
        """
        moment = datetime.fromtimestamp(now, UTC)
        if result.reason is ErrorReason.RATE_LIMITED:
            cooled = self._next(old, result, now, verify=False)
            return replace(cooled, next_check_at=moment + timedelta(seconds=check_in))
        return suspect_record(old, result, moment, check_in)

    def _scope(self, record: KeyRecord, reason: ErrorReason) -> list[tuple[_Slot, _Entry]]:
        """The (slot, entry) pairs a failure with `reason` of `record`'s key applies to."""
        if reason.is_key_wide:
            found: list[tuple[_Slot, _Entry]] = []
            for slot in self._instance_slots(record.instance):
                entry = slot.entries.get(record.key_id)
                if entry is not None:
                    found.append((slot, entry))
            return found
        own = self._slots.get((record.instance, record.model))
        mine = own.entries.get(record.key_id) if own else None
        return [] if own is None or mine is None else [(own, mine)]

    def _scope_valid(self, record: KeyRecord, reason: ErrorReason) -> int:
        """Valid keys in the scope of a failure with `reason` (the key judged included)."""
        if reason.is_key_wide:
            slots = self._instance_slots(record.instance)
            return max((s.counts[Status.VALID] for s in slots), default=0)
        slot = self._slots.get((record.instance, record.model))
        return slot.counts[Status.VALID] if slot is not None else 0

    def _set(self, slot: _Slot, entry: _Entry, new: KeyRecord, result: CheckResult) -> None:
        """Make `new` the entry's record: tallies, rotation, the store's queue, logs, events."""
        old = entry.record
        self._replace(slot, entry, new)
        if self._sink is not None:
            self._sink(new)
        if old.status is not new.status:
            log.info(
                "key_status_changed",
                instance=new.instance,
                model=new.model,
                key=mask_key(new.key),
                old=old.status.value,
                new=new.status.value,
                reason=new.reason.value if new.reason else None,
                status_code=result.status_code,
                message=result.message[:200],
            )
            # `at` is when the status was observed, as stored: the newest observation wins.
            self._emit(old, new, new.last_checked_at or datetime.fromtimestamp(self._clock(), UTC))

    def _replace(self, slot: _Slot, entry: _Entry, new: KeyRecord) -> None:
        old = entry.record
        before = slot.usable
        if old.status is not new.status:
            slot.count(old, -1)
            slot.count(new, 1)
        entry.record = new
        cool = new.cooldown_until.timestamp() if new.cooldown_until else 0.0
        entry.cool_until = cool if cool > self._clock() else 0.0
        slot.admit(entry)
        if before and not slot.usable:
            log.warning(
                "model_pool_empty",
                instance=new.instance,
                model=new.model,
                why=slot.explain(new.instance, new.model, self._clock()),
            )
        elif slot.usable and not before and slot.entries:
            log.info("model_pool_recovered", instance=new.instance, model=new.model)

    # -- incidents ----------------------------------------------------------

    def incidents(self) -> list[Incident]:
        """The incidents going on now."""
        return self._guard.incidents()

    def _incident_begun(self, incident: Incident, now: float) -> None:
        log.warning(
            "incident_started",
            instance=incident.instance,
            reason=incident.reason.value,
            keys_hit=incident.hits,
            keys_usable=incident.base,
            message=incident.describe(),
        )
        if self._observer is not None:
            self._observer.incident_started(incident.instance, incident.reason.value)
        self._publish(IncidentEvent("incident_started", incident, datetime.fromtimestamp(now, UTC)))

    def _incident_over(self, incident: Incident, why: str) -> None:
        log.warning(
            "incident_ended",
            instance=incident.instance,
            reason=incident.reason.value,
            why=why,
            keys_pending=len(incident.touched),
        )
        at = datetime.fromtimestamp(self._clock(), UTC)
        self._publish(IncidentEvent("incident_ended", incident, at))

    # -- other processes ---------------------------------------------------

    def apply_remote(self, record: KeyRecord) -> bool:
        """Take a record another process wrote, when it is newer than the pool's; True if taken.

        Newer means a later `last_checked_at` (every recorded outcome sets
        it), so a process's own records coming back, or an older state read
        from the store while a newer one waits in the write queue, change
        nothing. The record is applied as is (status, schedule, cool-down)
        without deriving anything and without going to the sink: its writer
        already stored it (and logged the change). A status change is
        announced to subscribers. `record.key` may be blank (notifications
        carry no key): the pool's copy is kept. A (key, model) not in the
        pool is added when the record carries its key and the instance is
        served here, else ignored.
        """
        if record.instance not in self._instances:
            return False
        slot = self._slots.get((record.instance, record.model))
        entry = slot.entries.get(record.key_id) if slot else None
        if slot is None or entry is None:
            if not record.key:
                return False
            self._add(record)
            return True
        old = entry.record
        if record.last_checked_at is None or (
            old.last_checked_at is not None and record.last_checked_at <= old.last_checked_at
        ):
            return False
        new = replace(record, key=old.key)
        self._replace(slot, entry, new)
        if old.status is not new.status:
            self._emit(old, new, new.last_checked_at or datetime.now(UTC))
        return True

    def remove_keys(self, instance: str, key_ids: Iterable[int]) -> int:
        """Drop the keys `key_ids` of `instance` for every model (deleted from the store).

        Returns the number of (key, model) entries dropped; unknown ids are ignored.
        """
        gone = set(key_ids)
        dropped = 0
        for (name, model), slot in list(self._slots.items()):
            if name != instance:
                continue
            hits = [key_id for key_id in gone if key_id in slot.entries]
            if not hits:
                continue
            for key_id in hits:
                slot.count(slot.entries.pop(key_id).record, -1)
            dropped += len(hits)
            slot.ring = deque(e for e in slot.ring if e.record.key_id in slot.entries)
            slot.cooling = [c for c in slot.cooling if c[1] in slot.entries]
            heapq.heapify(slot.cooling)
            if not slot.entries:
                del self._slots[(name, model)]
        return dropped

    def _emit(self, old: KeyRecord, new: KeyRecord, at: datetime) -> None:
        if not self._subscribers:
            return
        event = StatusEvent(
            instance=new.instance,
            model=new.model,
            key=mask_key(new.key),
            old=old.status,
            new=new.status,
            reason=new.reason.value if new.reason is not None else new.status.value,
            message=new.message[:200],
            at=at,
        )
        self._publish(event)

    def _publish(self, event: PoolEvent) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def _entry(self, record: KeyRecord) -> _Entry | None:
        slot = self._slots.get((record.instance, record.model))
        return slot.entries.get(record.key_id) if slot else None

    def _instance_slots(self, instance: str) -> Iterator[_Slot]:
        for (name, _), slot in self._slots.items():
            if name == instance:
                yield slot

    # -- observers --------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[PoolEvent]:
        """A queue receiving every status change and incident from now on (oldest dropped when full)."""
        queue: asyncio.Queue[PoolEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[PoolEvent]) -> None:
        """Stop delivering events to `queue`."""
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    def records(self, instance: str | None = None) -> list[KeyRecord]:
        """A snapshot of every current record (one instance or all)."""
        return [
            entry.record
            for (name, _), slot in self._slots.items()
            if instance is None or name == instance
            for entry in slot.entries.values()
        ]

    def get(self, instance: str, model: str, key_id: int) -> KeyRecord | None:
        """The current record of one (key, model), or None."""
        slot = self._slots.get((instance, model))
        entry = slot.entries.get(key_id) if slot else None
        return entry.record if entry else None
