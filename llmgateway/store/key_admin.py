"""The values the key admin exchanges with the store: filters, stored keys, reports, jobs.

Keys are addressed by their id (stable for the key's life) or selected by a
`KeyFilter`; a `Selection` is either, and an operation given a filter acts on
every key it matches, never on one page. `StoredKey.key` is the key in clear
text: whoever shows it masks it (`core.masking.mask_key`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, NamedTuple

from llmgateway.core.constants import Status
from llmgateway.core.models import KeyRecord

HISTORY_KEPT: Final = 50
"""Status changes kept per key at least (older ones are pruned when new ones are written)."""

INLINE_SOURCE: Final = "inline"
"""`source_file` of a key listed inline under the instance's `keys:`."""


class KeySource(StrEnum):
    """Where a key comes from, as shown: a key file (or inline list), else the key admin."""

    FILE = "file"
    API = "api"


class JobState(StrEnum):
    """Where a background job stands."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Which keys an operation concerns; every field set must hold (None: any).

    `status` matches a key when any of its models has it (the named `model`'s
    only, when `model` is set); `source` is `file` or `api`; `q` matches a
    fingerprint prefix (4 to 64 hex characters), the mask, or a whole key
    given verbatim.
    """

    instance: str | None = None
    model: str | None = None
    status: str | None = None
    source: str | None = None
    q: str | None = None


type Selection = tuple[int, ...] | KeyFilter
"""Keys named by id, or every key a filter matches."""


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """How much a key served: requests sent with it, the failed ones, and the last one's time."""

    requests: int = 0
    failures: int = 0
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One key as the key admin shows it: where it comes from, its status per model, its usage.

    `source_file` is the file that holds it as configured (`keys/x/y.txt`),
    `inline`, '' for a file key stored before files were recorded (named by
    the next key sync), or None when no file holds it.
    """

    id: int
    instance: str
    key: str
    fingerprint: str
    source: KeySource
    source_file: str | None
    models: Mapping[str, KeyRecord]
    usage: KeyUsage = field(default_factory=KeyUsage)


@dataclass(frozen=True, slots=True)
class KeyPage:
    """One page of a listing, with what the whole filter matched.

    `total` counts the matched keys; `facets` count them per `status` (a key
    counts once under each status any of its models has: under the filter's
    model only, when it names one) and per `instance`. `next_cursor` is the
    `after` of the next page, None on the last one.
    """

    items: list[StoredKey]
    total: int
    facets: dict[str, dict[str, int]]
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One status change of a key for a model (the message masked)."""

    key_id: int
    model: str
    old: Status
    new: Status
    reason: str | None
    message: str
    at: datetime


class UsageDelta(NamedTuple):
    """Increments of one key's usage counters, accumulated in memory and written in a batch.

    A named tuple: one is made per key used each second, and a tuple is made
    several times faster than a frozen dataclass.
    """

    key_id: int
    requests: int = 0
    failures: int = 0
    last_used: float | None = None
    """The latest use, in seconds since the Unix epoch (the request path's clock, kept as is)."""


@dataclass(frozen=True, slots=True)
class AddReport:
    """What an import stored: the new keys' ids, and how many keys were already there."""

    added: list[int]
    duplicates: int


@dataclass(frozen=True, slots=True)
class DeleteReport:
    """What a delete removed, and the keys it refused with why (`remove it from keys/x/y.txt`)."""

    deleted: list[int]
    refused: list[tuple[int, str]]


@dataclass(frozen=True, slots=True)
class Job:
    """A background job of the key admin (a recheck): its progress and its results so far."""

    id: int
    kind: str
    state: JobState
    done: int
    total: int
    results: dict[str, int]
    created_at: datetime
    updated_at: datetime


def source_of(source_file: str | None) -> KeySource:
    """The source shown for a key whose `source_file` column is `source_file`."""
    return KeySource.API if source_file is None else KeySource.FILE


def refusal(instance: str, source_file: str) -> str:
    """Why deleting a key held by `source_file` is refused, naming what to edit instead."""
    if source_file == INLINE_SOURCE:
        return f"remove it from providers.{instance}.keys in the configuration"
    if not source_file:
        return f"remove it from the key files of {instance}"
    return f"remove it from {source_file}"
