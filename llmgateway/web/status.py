"""The pool summary: the `/-/status` JSON document.

One builder serves both `/-/status` (fed the live pool's records) and
`llmgateway status` (fed the store's), so `llmgateway status --json` prints
exactly what `/-/status` answers. Keys are masked here and nowhere else in
this output.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import Status
from llmgateway.core.masking import mask_key
from llmgateway.core.models import KeyRecord

_STATUS_ORDER: Final = {status: index for index, status in enumerate(Status)}


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """Which serving process answered `/-/status` (several may share one database)."""

    pid: int
    started_at: datetime
    worker_index: int | None = None
    """Its number among the workers of `serve --workers N` (None: not given)."""

    @classmethod
    def current(cls, started_at: datetime, worker_index: int | None = None) -> ProcessInfo:
        """This process, started at `started_at`."""
        return cls(pid=os.getpid(), started_at=started_at, worker_index=worker_index)


def iso_utc(moment: datetime | None) -> str | None:
    """`moment` as ISO-8601 UTC to the second with a `Z` suffix (None stays None)."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).replace(microsecond=0).isoformat()
    return text.replace("+00:00", "Z")


def build_status_document(
    providers: Sequence[ProviderConfig],
    records: Iterable[KeyRecord],
    process: ProcessInfo | None = None,
    store_view: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
    incidents: Iterable[Mapping[str, Any]] = (),
    mask: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """The status document of `providers` from `records`.

    Every instance of `providers` appears (in their order) with its
    `provider_type`, `keys_total` (distinct keys), `models` (per status model,
    the count of each status present, in `Status` order), `usable` (per
    status model, the keys in the pool at `now`: usable status, not cooling
    down), `incidents` (the ongoing incidents of the instance, from the live
    pool) and `keys` (one entry per (key, model), key masked, sorted by model
    then key id; a `verifying` key carries its suspected `reason`).
    Records of instances not in `providers` are ignored. With `process`, a
    top-level `"process": {"pid", "started_at"}` says which process answered,
    plus its `worker_index` when known and, with `store_view`, the pool's view
    of the shared store (`store_view`: feed, notifications, reconciliations).
    Each stored message goes through `mask` (the process's masker) when given.
    """
    by_instance: dict[str, list[KeyRecord]] = {p.name: [] for p in providers}
    for record in records:
        bucket = by_instance.get(record.instance)
        if bucket is not None:
            bucket.append(record)
    moment = now or datetime.now(UTC)
    by_incident: dict[str, list[dict[str, Any]]] = {}
    for incident in incidents:
        by_incident.setdefault(str(incident["instance"]), []).append(dict(incident))
    document: dict[str, Any] = {
        "providers": {
            p.name: _instance_document(
                p, by_instance[p.name], moment, by_incident.get(p.name, []), mask
            )
            for p in providers
        }
    }
    if process is not None:
        about: dict[str, Any] = {"pid": process.pid, "started_at": iso_utc(process.started_at)}
        if process.worker_index is not None:
            about["worker_index"] = process.worker_index
        if store_view is not None:
            about["store_view"] = dict(store_view)
        document["process"] = about
    return document


def _instance_document(
    provider: ProviderConfig,
    records: list[KeyRecord],
    now: datetime,
    incidents: list[dict[str, Any]],
    mask: Callable[[str], str] | None,
) -> dict[str, Any]:
    records.sort(key=lambda r: (r.model, r.key_id))
    models = ConfigAccessor.status_models(provider)
    counts: dict[str, Counter[Status]] = {model: Counter() for model in models}
    usable: dict[str, int] = dict.fromkeys(models, 0)
    for record in records:
        counts.setdefault(record.model, Counter())[record.status] += 1
        in_pool = record.status.is_usable and (
            record.cooldown_until is None or record.cooldown_until <= now
        )
        usable[record.model] = usable.get(record.model, 0) + in_pool
    return {
        "provider_type": provider.provider_type.value,
        "keys_total": len({r.key_id for r in records}),
        "models": {
            model: {
                status.value: count
                for status, count in sorted(tally.items(), key=lambda i: _STATUS_ORDER[i[0]])
            }
            for model, tally in counts.items()
        },
        "usable": usable,
        "incidents": incidents,
        "keys": [_key_document(r, mask) for r in records],
    }


def _key_document(record: KeyRecord, mask: Callable[[str], str] | None) -> dict[str, Any]:
    return {
        "key": mask_key(record.key),
        "model": record.model,
        "status": record.status.value,
        "reason": record.reason.value if record.reason is not None else None,
        "last_checked_at": iso_utc(record.last_checked_at),
        "next_check_at": iso_utc(record.next_check_at),
        "failing_since": iso_utc(record.failing_since),
        "status_code": record.status_code,
        "message": mask(record.message) if mask is not None and record.message else record.message,
    }
