"""The incident guard: many keys failing alike at once is the upstream's incident, not N bad keys.

Within a short window (`keeper.incident_window`, 10 s by default) verdicts
seen on client traffic against keys known to work (status `valid`) are
counted per instance and reason. When one reason (invalid_key, no_access,
no_quota or rate_limited) hits at least half of the instance's valid keys,
and at least `MIN_KEYS` of them, an IP block, an outage or a regional ban is
far likelier than that many working keys dying together. (Untested keys
failing are just bad keys, as in a freshly imported list.)
From then on no further key is condemned for that reason; the keys already
hit are rechecked on a short backoff (10 s doubling to 5 min) instead of the
long interval, and come back as soon as a probe succeeds. The incident ends
when every key it touched is back, or after `MAX_DURATION`, when whatever
still fails is judged by the keeper's probes as usual.

Pure bookkeeping over an injected clock: the pool applies what this decides.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, final

from llmgateway.core.constants import ErrorReason

INCIDENT_REASONS: Final = frozenset(
    {
        ErrorReason.INVALID_KEY,
        ErrorReason.NO_ACCESS,
        ErrorReason.NO_QUOTA,
        ErrorReason.RATE_LIMITED,
    }
)
"""Reasons that, seen on many keys at once, point at the upstream rather than the keys."""

MIN_KEYS: Final = 3
"""An incident needs at least this many distinct keys hit within the window."""

BACKOFF_START: Final = 10.0
"""Seconds until a touched key's first recheck; doubled after every failed one."""

BACKOFF_MAX: Final = 300.0
"""The longest wait between two rechecks of a touched key."""

MAX_DURATION: Final = 3600.0
"""An incident lasting longer is over: its keys' probes decide as usual from then on."""


@dataclass(slots=True)
class Incident:
    """One ongoing incident of an instance: its reason and the keys it touched."""

    instance: str
    reason: ErrorReason
    started: float
    window: float
    hits: int
    """Distinct keys hit within the window when the incident was declared."""
    base: int
    """Usable keys of the instance (before the window's verdicts) at that moment."""
    touched: dict[int, int] = field(default_factory=dict)
    """Key id → rechecks that failed since the incident began."""

    def backoff(self, key_id: int) -> float:
        """Seconds until the next recheck of `key_id` (10 s, doubling, at most 5 min)."""
        failed = self.touched.get(key_id, 0)
        return float(min(BACKOFF_START * (2.0**failed), BACKOFF_MAX))

    def describe(self) -> str:
        """One line naming the incident, for clients' error messages and logs."""
        return (
            f"upstream incident on {self.instance}: {self.hits} of {self.base} keys answered "
            f"{self.reason.value} within {_seconds(self.window)}; no key is condemned while "
            f"it lasts and the keys hit are rechecked"
        )

    def as_dict(self) -> dict[str, Any]:
        """The incident as shown in `/-/status`."""
        return {
            "instance": self.instance,
            "reason": self.reason.value,
            "started_at": _iso(self.started),
            "keys_hit": self.hits,
            "keys_usable": self.base,
            "keys_pending": len(self.touched),
            "message": self.describe(),
        }


@final
class IncidentGuard:
    """Counts traffic verdicts per instance and reason, and declares incidents.

    `observe` is called for every fatal or rate-limit verdict seen on traffic
    before the key is condemned; `recovered` and `failed_again` for the probes
    and successes of touched keys; `expire` ends incidents past `MAX_DURATION`.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._hits: dict[tuple[str, ErrorReason], deque[tuple[float, int]]] = {}
        self._active: dict[tuple[str, ErrorReason], Incident] = {}

    def active(self, instance: str, reason: ErrorReason) -> Incident | None:
        """The ongoing incident of `instance` for `reason`, if any."""
        return self._active.get((instance, reason)) if self._active else None

    def of_instance(self, instance: str) -> Incident | None:
        """Any ongoing incident of `instance` (the first declared), or None."""
        if not self._active:
            return None
        for (name, _), incident in self._active.items():
            if name == instance:
                return incident
        return None

    def incidents(self) -> list[Incident]:
        """Every ongoing incident."""
        return list(self._active.values())

    def observe(
        self, instance: str, reason: ErrorReason, key_id: int, usable: int, now: float
    ) -> Incident | None:
        """Count a traffic verdict; the incident it starts, or None to condemn the key as usual.

        `usable` is the number of the instance's keys known to work right now
        (the key being judged included). The keys hit earlier in the window
        worked too before they were hit, so they are added back to it.
        """
        if reason not in INCIDENT_REASONS:
            return None
        hits = self._hits.setdefault((instance, reason), deque())
        while hits and hits[0][0] <= now - self.window:
            hits.popleft()
        hits.append((now, key_id))
        distinct = {k for _, k in hits}
        earlier = len(distinct) - 1 if key_id in distinct else len(distinct)
        base = usable + max(earlier, 0)
        if len(distinct) < MIN_KEYS or 2 * len(distinct) < base:
            return None
        incident = Incident(
            instance=instance,
            reason=reason,
            started=now,
            window=self.window,
            hits=len(distinct),
            base=base,
            touched=dict.fromkeys(distinct, 0),
        )
        self._active[(instance, reason)] = incident
        hits.clear()
        return incident

    def failed_again(self, incident: Incident, key_id: int) -> float:
        """A touched (or newly failing) key failed its recheck; seconds until the next one."""
        failed = incident.touched.get(key_id)
        incident.touched[key_id] = 0 if failed is None else failed + 1
        return incident.backoff(key_id)

    def recovered(self, instance: str, key_id: int) -> list[Incident]:
        """`key_id` of `instance` works again; the incidents that ended because of it."""
        ended: list[Incident] = []
        for key, incident in list(self._active.items()):
            if key[0] != instance or key_id not in incident.touched:
                continue
            del incident.touched[key_id]
            if not incident.touched:
                del self._active[key]
                ended.append(incident)
        return ended

    def forget(self, instance: str, present: Container[int]) -> list[Incident]:
        """Drop the touched keys of `instance` not in `present` (gone from the pool).

        An incident left without touched keys is over; the ended ones are returned.
        """
        ended: list[Incident] = []
        for key, incident in list(self._active.items()):
            if key[0] != instance:
                continue
            for key_id in [k for k in incident.touched if k not in present]:
                del incident.touched[key_id]
            if not incident.touched:
                del self._active[key]
                ended.append(incident)
        return ended

    def expire(self, now: float) -> list[Incident]:
        """End the incidents older than `MAX_DURATION`; return them."""
        if not self._active:
            return []
        ended = [i for i in self._active.values() if now - i.started >= MAX_DURATION]
        for incident in ended:
            del self._active[(incident.instance, incident.reason)]
        return ended


def _seconds(value: float) -> str:
    return f"{math.ceil(value)} s" if value >= 1 else f"{round(value * 1000)} ms"


def _iso(epoch: float) -> str:
    text = datetime.fromtimestamp(epoch, UTC).replace(microsecond=0).isoformat()
    return text.replace("+00:00", "Z")
