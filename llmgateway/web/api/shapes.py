"""The JSON answers of the key admin API, shaped from the store's and the pool's values.

Pure functions. Keys leave only masked (`mask_key`) with the first 12 hex of
their fingerprint; every free text (a provider's message) goes through the
`mask` callable the handler passes (the process's masker). Times are ISO
8601 UTC with `Z`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from llmgateway.core.masking import mask_key
from llmgateway.core.models import KeyRecord
from llmgateway.pool.route import RouteView
from llmgateway.web.api.validation import RejectedLine

FINGERPRINT_SHOWN: Final = 12
"""Hex characters of a key's fingerprint shown."""

Mask = Callable[[str], str]
"""Masks every secret in a text (the process's `Masker.mask_text`)."""


class UsageView(Protocol):
    """A key's usage counters."""

    @property
    def requests(self) -> int:
        """Requests sent with the key."""

    @property
    def failures(self) -> int:
        """Of them, those that failed."""

    @property
    def last_used_at(self) -> datetime | None:
        """When it was last used."""


class StoredKeyView(Protocol):
    """What the answers read of a stored key."""

    @property
    def id(self) -> int:
        """The key's id."""

    @property
    def instance(self) -> str:
        """Its provider instance."""

    @property
    def key(self) -> str:
        """The key in clear (masked here)."""

    @property
    def fingerprint(self) -> str:
        """Its fingerprint, hex."""

    @property
    def source(self) -> str:
        """ "file" or "api"."""

    @property
    def models(self) -> Mapping[str, KeyRecord]:
        """Its status per model."""

    @property
    def usage(self) -> UsageView:
        """Its usage counters as stored."""


class HistoryView(Protocol):
    """One status change of a key."""

    @property
    def model(self) -> str:
        """The model it concerns."""

    @property
    def old(self) -> str:
        """The status before."""

    @property
    def new(self) -> str:
        """The status after."""

    @property
    def reason(self) -> str | None:
        """The reason of the new status."""

    @property
    def message(self) -> str:
        """The provider's message (masked when stored)."""

    @property
    def at(self) -> datetime:
        """When it changed."""


class JobView(Protocol):
    """A background job's row."""

    @property
    def id(self) -> int:
        """The job's id."""

    @property
    def kind(self) -> str:
        """What it does ("recheck")."""

    @property
    def state(self) -> str:
        """running, done or failed."""

    @property
    def done(self) -> int:
        """Items finished."""

    @property
    def total(self) -> int:
        """Items in all."""

    @property
    def results(self) -> Mapping[str, int]:
        """Outcomes counted by status."""


def iso(moment: datetime | None) -> str | None:
    """`moment` as ISO 8601 UTC with `Z` (None stays None)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def error_body(code: str, message: str) -> dict[str, Any]:
    """The body of every refusal: `{"error": {"message", "code"}}`."""
    return {"error": {"message": message, "code": code}}


def fingerprint_shown(fingerprint: str) -> str:
    """The part of a fingerprint the answers show."""
    return fingerprint[:FINGERPRINT_SHOWN]


def model_json(record: KeyRecord, mask: Mask) -> dict[str, Any]:
    """One model's entry of a KEY's `models`."""
    return {
        "status": record.status.value,
        "reason": record.reason.value if record.reason is not None else None,
        "status_code": record.status_code,
        "message": mask(record.message) if record.message else "",
        "last_checked_at": iso(record.last_checked_at),
        "next_check_at": iso(record.next_check_at),
        "cooldown_until": iso(record.cooldown_until),
    }


def usage_json(
    usage: UsageView, unflushed: tuple[int, int, datetime | None] | None = None
) -> dict[str, Any]:
    """A KEY's `usage`: the stored counters plus what this process has not written yet."""
    requests, failures, last = usage.requests, usage.failures, usage.last_used_at
    if unflushed is not None:
        requests += unflushed[0]
        failures += unflushed[1]
        if unflushed[2] is not None and (last is None or unflushed[2] > last):
            last = unflushed[2]
    return {"requests": requests, "failures": failures, "last_used_at": iso(last)}


def key_json(
    stored: StoredKeyView,
    mask: Mask,
    live: Mapping[str, KeyRecord] | None = None,
    unflushed: tuple[int, int, datetime | None] | None = None,
) -> dict[str, Any]:
    """A KEY: `{"id", "instance", "key", "fingerprint", "source", "models", "usage"}`.

    `live` holds this process's pool records of the key by model; they are
    newer than the stored ones (the write queue may not have written them).
    """
    models = dict(stored.models)
    if live:
        models.update(live)
    return {
        "id": stored.id,
        "instance": stored.instance,
        "key": mask_key(stored.key),
        "fingerprint": fingerprint_shown(stored.fingerprint),
        "source": stored.source,
        "models": {name: model_json(models[name], mask) for name in sorted(models)},
        "usage": usage_json(stored.usage, unflushed),
    }


def history_json(entries: Iterable[HistoryView], mask: Mask) -> list[dict[str, Any]]:
    """A key's `history`, newest first as given."""
    return [
        {
            "model": entry.model,
            "old": entry.old,
            "new": entry.new,
            "reason": entry.reason,
            "message": mask(entry.message) if entry.message else "",
            "at": iso(entry.at),
        }
        for entry in entries
    ]


def page_json(
    items: Sequence[dict[str, Any]],
    total: int,
    facets: Mapping[str, Mapping[str, int]],
    next_cursor: int | None,
) -> dict[str, Any]:
    """The answer of `GET /-/api/keys`."""
    return {
        "items": list(items),
        "total": total,
        "facets": {
            "status": dict(facets.get("status", {})),
            "instance": dict(facets.get("instance", {})),
        },
        "next_cursor": None if next_cursor is None else str(next_cursor),
    }


def import_json(added: int, duplicates: int, rejected: Iterable[RejectedLine]) -> dict[str, Any]:
    """The answer of `POST /-/api/keys`."""
    return {
        "added": added,
        "duplicates": duplicates,
        "rejected": [{"line": r.line, "reason": r.reason} for r in rejected],
    }


def delete_json(deleted: int, refused: Iterable[tuple[int, str]]) -> dict[str, Any]:
    """The answer of `POST /-/api/keys/delete`."""
    return {
        "deleted": deleted,
        "refused": [{"id": key_id, "reason": reason} for key_id, reason in refused],
    }


def job_json(job: JobView) -> dict[str, Any]:
    """The answer of `GET /-/api/jobs/{id}`."""
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "done": job.done,
        "total": job.total,
        "results": dict(job.results),
    }


def job_event(job_id: int, done: int, total: int, state: str) -> dict[str, Any]:
    """A job's progress as announced on `/-/events`."""
    return {"job": job_id, "done": done, "total": total, "state": state}


def route_json(view: RouteView) -> dict[str, Any]:
    """The answer of `GET /-/api/route`."""
    chosen = view.next
    return {
        "instance": view.instance,
        "model": view.model,
        "usable": view.usable,
        "next": (
            None
            if chosen is None
            else {"id": chosen.key_id, "key": mask_key(chosen.key), "status": chosen.status.value}
        ),
        "skipped": [{"id": s.key_id, "key": s.key, "why": s.why} for s in view.skipped],
        "counts": dict(view.counts),
    }
