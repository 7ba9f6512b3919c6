"""What the outcome of a call means for a key: verdicts, suspicion, incidents.

`Verdicts.report` is where every outcome lands (the keeper's probes and the
gateway's traffic). It decides the scope of a failure, asks the health policy
(`llmgateway.pool.policy`) for the next record, holds keys without a verdict
while a probe confirms what traffic suspected, and consults the incident
guard (`llmgateway.pool.incidents`) before condemning keys that worked.
The new records are applied by the `StatusWriter`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol, final

import structlog

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.pool.benching import Bench
from llmgateway.pool.events import EventHub, IncidentEvent
from llmgateway.pool.incidents import BACKOFF_START, Incident, IncidentGuard
from llmgateway.pool.policy import next_record, suspect_record
from llmgateway.pool.slots import Clock, SlotTable
from llmgateway.pool.statuses import StatusWriter

log = structlog.get_logger("llmgateway.pool")


class PoolObserver(Protocol):
    """Told about what the pool decides on its own (implemented by the metrics)."""

    def incident_started(self, instance: str, reason: str) -> None:
        """An incident of `instance` for `reason` was declared."""


@final
class Verdicts:
    """Turns outcomes into new records for the keys they concern (see `KeyPool.report`)."""

    def __init__(
        self,
        accessor: ConfigAccessor,
        table: SlotTable,
        writer: StatusWriter,
        hub: EventHub,
        clock: Clock,
        rng: Callable[[], float],
        observer: PoolObserver | None,
    ) -> None:
        settings = accessor.keeper
        self._accessor = accessor
        self._table = table
        self._writer = writer
        self._hub = hub
        self._clock = clock
        self._rng = rng
        self._observer = observer
        self._confirm_within = settings.confirm_within
        self.guard = IncidentGuard(settings.incident_window)
        self.bench = Bench(table, settings.server_error_cooldown)

    def use(self, accessor: ConfigAccessor) -> None:
        """Read health policies and keeper options from `accessor` from now on (a reload)."""
        settings = accessor.keeper
        self._accessor = accessor
        self._confirm_within = settings.confirm_within
        self.guard.window = settings.incident_window
        self.bench.seconds = settings.server_error_cooldown

    def report(self, record: KeyRecord, result: CheckResult, probe: bool) -> Incident | None:
        """Apply the outcome of a call made with `record`'s key (see `KeyPool.report`)."""
        reason = result.reason
        if reason is None:
            self._succeeded(record, result, probe)
            return None
        now = self._clock()
        if self.guard.incidents():
            for incident in self.guard.expire(now):
                self.incident_over(incident, "it lasted too long to be a passing incident")
        if probe:
            self._probed_failure(record, result, now)
            return None
        if reason.is_server_error:
            self.bench.server_error(record, now)
            return None
        if not (reason.is_fatal or reason is ErrorReason.RATE_LIMITED):
            return None
        return self._traffic_verdict(record, result, now)

    def _succeeded(self, record: KeyRecord, result: CheckResult, probe: bool) -> None:
        slot = self._table.slots.get((record.instance, record.model))
        entry = slot.entries.get(record.key_id) if slot else None
        if slot is None or entry is None:
            return
        if not probe and entry.record.status is Status.VALID:
            return
        now = self._clock()
        self._writer.set(slot, entry, self._next(entry.record, result, now, verify=probe), result)
        if self.guard.incidents():
            for incident in self.guard.recovered(record.instance, record.key_id):
                self.incident_over(incident, "its keys work again")

    def _probed_failure(self, record: KeyRecord, result: CheckResult, now: float) -> None:
        reason = result.reason
        assert reason is not None
        incident = self.guard.active(record.instance, reason)
        if incident is not None and record.key_id not in incident.touched:
            current = self._table.entry(record)
            if current is None or current.record.status is not Status.VALID:
                incident = None  # only keys known to work are shielded by an incident
        scope = self._table.scope(record, reason)
        if incident is None:
            for slot, entry in scope:
                new = self._next(entry.record, result, now, verify=True)
                self._writer.set(slot, entry, new, result)
            return
        # While the incident lasts, failing its way is no verdict: recheck on its backoff.
        wait = self.guard.failed_again(incident, record.key_id)
        for slot, entry in scope:
            self._writer.set(slot, entry, self._held(entry.record, result, now, wait), result)

    def _traffic_verdict(
        self, record: KeyRecord, result: CheckResult, now: float
    ) -> Incident | None:
        reason = result.reason
        assert reason is not None
        instance = record.instance
        incident = self.guard.active(instance, reason)
        if incident is not None:
            return incident  # no further key is condemned while it lasts
        current = self._table.entry(record)
        if current is not None and current.record.status is Status.VALID:
            # Only keys known to work count: untested keys failing are just bad keys.
            valid = self._table.scope_valid(record, reason)
            incident = self.guard.observe(instance, reason, record.key_id, valid, now)
        if incident is None:
            check_in = self._confirm_within * (0.25 + 0.5 * self._rng())
            for slot, entry in self._table.scope(record, reason):
                held = self._held(entry.record, result, now, check_in)
                self._writer.set(slot, entry, held, result)
            return None
        for slot, entry in self._table.scope(record, reason):
            held = self._held(entry.record, result, now, BACKOFF_START)
            self._writer.set(slot, entry, held, result)
        # The keys hit before it was declared: rechecked on the short backoff from now on.
        due = datetime.fromtimestamp(now + BACKOFF_START, UTC)
        for each in self._table.of_instance(instance):
            for key_id in incident.touched:
                hit = each.entries.get(key_id)
                if hit is not None and key_id != record.key_id and hit.record.reason is reason:
                    self._writer.set(each, hit, replace(hit.record, next_check_at=due), result)
        self._incident_begun(incident, now)
        return incident

    def _next(self, old: KeyRecord, result: CheckResult, now: float, *, verify: bool) -> KeyRecord:
        """The policy's next record (a verdict) for `old` after `result` at `now`."""
        return next_record(
            old,
            result,
            datetime.fromtimestamp(now, UTC),
            self._accessor.health_policy(old.instance),
            self._accessor.rate_limit_cooldown(old.instance),
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
        at = datetime.fromtimestamp(now, UTC)
        self._hub.publish(IncidentEvent("incident_started", incident, at))

    def incident_over(self, incident: Incident, why: str) -> None:
        """Log and announce that `incident` ended, and `why`."""
        log.warning(
            "incident_ended",
            instance=incident.instance,
            reason=incident.reason.value,
            why=why,
            keys_pending=len(incident.touched),
        )
        at = datetime.fromtimestamp(self._clock(), UTC)
        self._hub.publish(IncidentEvent("incident_ended", incident, at))
