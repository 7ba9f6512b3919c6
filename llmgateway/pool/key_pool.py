"""The live key pool: per (instance, model) the keys usable now, shared by keeper and gateway.

`KeyPool` is the facade the rest of the application uses. Behind it:
`slots` (the per-(instance, model) rotation and the pick), `verdicts` (what an
outcome means for a key), `statuses` (applying a new record), `benching`
(server errors in a row), `incidents` and `events` (what `/-/events`
subscribers receive). Every change is applied in memory at once, handed to a
write sink (the store's write-behind queue) and announced to subscribers;
nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, final

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.core.constants import Status
from llmgateway.core.errors import KeysCoolingDown, NoUsableKey
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.core.turns import in_slices
from llmgateway.pool.events import EventHub, IncidentEvent, JobEvent, PoolEvent, StatusEvent
from llmgateway.pool.incidents import Incident
from llmgateway.pool.listing import ModelTally, Position, page, tally
from llmgateway.pool.route import RouteView, inspect_slot
from llmgateway.pool.sharded import SHARDS, IdSet
from llmgateway.pool.slots import AllKeysTried, Clock, Slot, SlotTable
from llmgateway.pool.statuses import HistorySink, RecordSink, StatusWriter
from llmgateway.pool.usage import UsageCounter
from llmgateway.pool.verdicts import PoolObserver, Verdicts

SLICE: Final = 2000
"""Records a sliced resync handles before it lets the event loop run."""

ID_SHARDS_PER_TURN: Final = 8
"""Shards of a slot's ids `key_ids` copies before it lets the event loop run
(a 64th of 100,000 ids is copied in about 30 µs)."""

__all__ = [
    "AllKeysTried",
    "Clock",
    "HistorySink",
    "IdSet",
    "IncidentEvent",
    "JobEvent",
    "KeyPool",
    "PoolEvent",
    "StatusEvent",
]


@final
class KeyPool:
    """Live, in-memory key pool of every enabled provider instance.

    The keeper and the gateway both `pick` and `report` here; the pool decides
    what a result means for the key (scope, cool-down, policy, incidents) so
    that callers never do. A fatal reason seen on traffic makes the key
    `verifying`: out of the pool for its scope at once, probed within
    `keeper.confirm_within` (jittered), condemned for the policy's interval
    only when the keeper's probe confirms it. Server errors never condemn a
    key: after a few in a row from traffic it is benched for
    `keeper.server_error_cooldown`, picked only when no other key is usable.
    """

    def __init__(
        self,
        accessor: ConfigAccessor,
        sink: RecordSink | None = None,
        clock: Clock = time.time,
        *,
        rng: Callable[[], float] = random.random,
        observer: PoolObserver | None = None,
        history: HistorySink | None = None,
    ) -> None:
        self._accessor = accessor
        self._clock = clock
        self._table = SlotTable(clock)
        self._slots = self._table.slots
        self._hub = EventHub()
        self._writer = StatusWriter(self._table, clock, sink, self._hub, accessor.serves)
        self._verdicts = Verdicts(
            accessor, self._table, self._writer, self._hub, clock, rng, observer
        )
        self._guard = self._verdicts.guard
        self._streaks = self._verdicts.bench.streaks
        self._writer.history = history
        self.usage = UsageCounter()
        """Requests and failures per key, counted here and drained to the store's queue."""

    # -- building ---------------------------------------------------------

    def load(self, records: Iterable[KeyRecord]) -> None:
        """Replace the pool's content with `records` (start-up, from the store).

        Usage tallies are made at each key's first use, not here: a large
        pool whose keys are not all used does not carry one per key.
        """
        self._slots.clear()
        self._table.load(records)

    def add_records(self, records: Iterable[KeyRecord]) -> int:
        """Add the (key, model) records of keys just stored (the key admin's import).

        Records already in the pool, or of an instance not served here, are
        left alone. Returns the number added.
        """
        added = 0
        for record in records:
            if self._table.entry(record) is None and self._writer.apply_remote(record):
                added += 1
        return added

    def apply_admin(self, records: Iterable[KeyRecord]) -> int:
        """Make the records of a change made by hand (disable, enable) current, at once.

        They are already stored, so they do not go to the sink; status
        changes are announced. Returns the number applied.
        """
        return sum(self._writer.force(record) for record in records)

    def drop_keys(self, key_ids: Iterable[int]) -> int:
        """Drop the keys `key_ids` for every model, whatever their instance (deleted by hand).

        They never join the pool again (a stale read of the store cannot bring them back).
        Returns the number of (key, model) entries dropped.
        """
        gone = set(key_ids)
        self._table.deleted |= gone
        self.usage.forget(gone)
        instances = {name for name, _ in self._slots}
        return sum(self._table.remove(name, gone) for name in instances)

    async def key_ids(self, instance: str) -> dict[str, IdSet]:
        """The key ids of each status model of `instance` in the pool now (a copy).

        Each model's ids are copied shard by shard into its `IdSet` (fast
        copies), `ID_SHARDS_PER_TURN` shards at a time with the event loop
        running in between. A key that comes or goes meanwhile may be in the
        copy or not: the copy only ever serves to find keys the store no
        longer has, and a key joining the pool is in the store already.
        """
        copies: dict[str, IdSet] = {}
        for (name, model), slot in list(self._slots.items()):
            if name != instance:
                continue
            ids = copies[model] = IdSet()
            for index in range(SHARDS):
                ids.copy_shard(slot.entries, index)
                if index % ID_SHARDS_PER_TURN == ID_SHARDS_PER_TURN - 1:
                    await asyncio.sleep(0)
        return copies

    def merge_stored(self, record: KeyRecord) -> bool:
        """Add a stored (key, model) the pool lacks, or take its newer status; True if taken.

        One record of a reconciliation read page by page (see
        `KeySync.reconcile`): a (key, model) new to the pool is added (False:
        nothing was newer), one already there takes the record when it is
        newer (`apply_remote`).
        """
        slot = self._slots.get((record.instance, record.model))
        if slot is None or record.key_id not in slot.entries:
            self._table.add(record)
            return False
        return self._writer.apply_remote(record)

    async def drop_missing(self, instance: str, missing: Mapping[str, Iterable[int]]) -> None:
        """Drop the entries of `instance` whose key ids `missing[model]` names, a slice at a time.

        The end of a reconciliation or of a reload's key merge: `missing`
        holds what the pool had (`key_ids`) and the store no longer has.
        `SLICE` ids are dropped between two turns of the event loop; a slot
        left empty leaves the table, and what its rotation still held is let
        go of a slice at a time too. Incidents forget the keys gone.
        """
        slots = self._slots
        for (name, model), slot in list(slots.items()):
            if name != instance:
                continue
            async for ids in in_slices(list(missing.get(model, ())), SLICE):
                slot.drop(ids)
            await asyncio.sleep(0)
            if not slot.entries and slots.get((name, model)) is slot:
                del slots[(name, model)]
                for _ in range(0, max(len(slot.ring), len(slot.cooling)), SLICE):
                    slot.shed(SLICE)
                    await asyncio.sleep(0)
        left = _InstanceKeys([slot for (name, _), slot in slots.items() if name == instance])
        for incident in self._guard.forget(instance, left):
            self._verdicts.incident_over(incident, "its keys left the pool")

    def remove_keys(self, instance: str, key_ids: Iterable[int]) -> int:
        """Drop the keys `key_ids` of `instance` for every model (deleted from the store).

        Returns the number of (key, model) entries dropped; unknown ids are ignored.
        """
        return self._table.remove(instance, key_ids)

    def use(self, accessor: ConfigAccessor) -> None:
        """Follow the configuration `accessor` from now on (a reload; the keys stay as they are)."""
        self._accessor = accessor
        self._writer.use(accessor.serves)
        self._verdicts.use(accessor)

    async def drop_instance(self, instance: str) -> None:
        """Take every key of `instance` out of the pool (it is no longer served here), in slices."""
        await self.drop_missing(instance, await self.key_ids(instance))

    # -- the request path -------------------------------------------------

    def slot_model(self, instance: str, model: str) -> str:
        """The status model under which a request for `model` picks its key."""
        return self._accessor.status_model(instance, model)

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
        record = slot.pick(now, exclude)
        if record is not None:
            return record
        soonest = slot.soonest(now)
        incident = self._guard.of_instance(instance)
        if soonest is not None:
            text = f"every key of {instance}/{model} is cooling down"
            if incident is not None:
                text = f"{incident.describe()}; {text}"
            raise KeysCoolingDown(text, retry_after=soonest)
        text = slot.explain(now)
        if incident is not None:
            text = f"{incident.describe()}; {text}"
        raise NoUsableKey(text)

    def served(self, record: KeyRecord, status_code: int) -> None:
        """A request with `record`'s key succeeded on traffic (cheap when nothing changes)."""
        self.usage.count(record.key_id, False, self._clock())
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

        A failure on traffic counts in the key's usage. A key disabled by
        hand meanwhile keeps its status: the outcome is ignored.
        """
        if not probe and result.reason is not None:
            self.usage.count(record.key_id, True, self._clock())
        current = self._table.entry(record)
        if current is not None and current.record.status is Status.DISABLED:
            return None
        return self._verdicts.report(record, result, probe)

    def incidents(self) -> list[Incident]:
        """The incidents going on now."""
        return self._guard.incidents()

    def route(self, instance: str, model: str) -> RouteView:
        """Which key would serve `model` of enabled `instance` next, and why others are skipped."""
        status_model = self._accessor.status_model(instance, model)
        slot = self._slots.get((instance, status_model))
        return inspect_slot(instance, model, status_model, slot, self._clock())

    def announce_job(self, job_id: int, done: int, total: int, state: str) -> None:
        """Announce a background job's progress to the `/-/events` subscribers."""
        self._hub.publish(JobEvent(job_id, done, total, state))

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
        return self._writer.apply_remote(record)

    # -- observers --------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[PoolEvent]:
        """A queue receiving every status change and incident from now on (oldest dropped when full)."""
        return self._hub.subscribe()

    def unsubscribe(self, queue: asyncio.Queue[PoolEvent]) -> None:
        """Stop delivering events to `queue`."""
        self._hub.unsubscribe(queue)

    def records(self, instance: str | None = None) -> list[KeyRecord]:
        """A snapshot of every current record (one instance or all)."""
        return [
            entry.record
            for (name, _), slot in self._slots.items()
            if instance is None or name == instance
            for entry in slot.entries.values()
        ]

    def tallies(self) -> list[ModelTally]:
        """The counts of every (instance, status model) now, from the slots' own tallies."""
        now = self._clock()
        return [tally(slot, now) for slot in self._slots.values()]

    def page(self, after: Position | None, limit: int) -> list[KeyRecord]:
        """Up to `limit` records after `after` in (instance, key id, model) order."""
        return page(self._slots.values(), after, limit)

    def get(self, instance: str, model: str, key_id: int) -> KeyRecord | None:
        """The current record of one (key, model), or None."""
        slot = self._slots.get((instance, model))
        entry = slot.entries.get(key_id) if slot else None
        return entry.record if entry else None


@dataclass(frozen=True, slots=True)
class _InstanceKeys:
    """The key ids an instance still has in the pool, asked one at a time.

    What the incidents' `forget` checks its few touched keys against, instead
    of a set of every key of the instance (100,000 ids copied on the event
    loop for a handful of look-ups).
    """

    slots: list[Slot]

    def __contains__(self, key_id: object) -> bool:
        return any(key_id in slot.entries for slot in self.slots)
