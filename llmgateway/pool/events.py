"""What the pool announces to `/-/events` subscribers: status changes and incidents."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, final

from llmgateway.core.constants import Status
from llmgateway.core.logs import mask_key
from llmgateway.core.models import KeyRecord
from llmgateway.pool.incidents import Incident

EVENT_QUEUE_SIZE: Final = 1000
"""Events a subscriber's queue holds; the oldest is dropped when it is full."""


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


@dataclass(frozen=True, slots=True)
class JobEvent:
    """A background job's progress (a recheck of keys)."""

    job: int
    done: int
    total: int
    state: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of a job's progress on `/-/events`."""
        return {"job": self.job, "done": self.done, "total": self.total, "state": self.state}


PoolEvent = StatusEvent | IncidentEvent | JobEvent
"""What `/-/events` subscribers receive."""


@final
class EventHub:
    """The subscribers' queues, and the publishing of events to each of them."""

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: list[asyncio.Queue[PoolEvent]] = []

    def subscribe(self) -> asyncio.Queue[PoolEvent]:
        """A queue receiving every event from now on (oldest dropped when full)."""
        queue: asyncio.Queue[PoolEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[PoolEvent]) -> None:
        """Stop delivering events to `queue`."""
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    def status_changed(self, old: KeyRecord, new: KeyRecord, at: datetime) -> None:
        """Announce that `old`'s status became `new`'s, observed at `at`."""
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
        self.publish(event)

    def publish(self, event: PoolEvent) -> None:
        """Put `event` in every subscriber's queue."""
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
