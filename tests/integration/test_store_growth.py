"""Every store operation over a pool grows linearly with it, never with its square (SQLite).

A statement that joins a table to a bound list can be planned as a scan of
the list for every row of the table: at 10,000 keys a key sync once took 38 s
that way. Wall time is no test of that (a busy machine, a fast one); SQLite's
virtual machine instructions are: the progress handler counts them,
deterministically, for each operation run on a pool of N keys and on one of
2N. Linear work doubles; an n x m plan quadruples. A ratio under 3 leaves
room for the log factor of index look-ups and for fixed costs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import pytest

from llmgateway.core.constants import ProviderType, Status
from llmgateway.store.key_admin import HistoryEntry, KeyFilter, UsageDelta
from llmgateway.store.sqlite import SqliteStore

INSTANCE: Final = "oai"
MODELS: Final = ("gpt-4o-mini", "gpt-4o")
SMALL: Final = 1_000
"""Keys of the smaller pool (the larger holds twice as many)."""
STEP: Final = 1_000
"""VM instructions per progress-handler call."""
LINEAR: Final = 3.0
"""The largest ratio of instructions, 2N keys over N keys, that counts as linear."""
NOW: Final = datetime(2026, 1, 1, tzinfo=UTC)

type Operation = Callable[[SqliteStore, int], Awaitable[object]]


def _keys(count: int, start: int = 0) -> list[str]:
    return [f"sk-growth-{i:07d}-0123456789abcdef" for i in range(start, start + count)]


async def _pool(path: Path, n: int) -> SqliteStore:
    """A store of `n` file keys × 2 models, half of them `valid`, half `invalid_key`."""
    store = SqliteStore(path)
    await store.open()
    await store.sync_providers([(INSTANCE, ProviderType.OPENAI_LIKE)])
    keys = _keys(n)
    await store.sync_keys(INSTANCE, keys, MODELS, NOW, files=dict.fromkeys(keys, "keys/a.txt"))
    records = await store.load_records(INSTANCE)
    await store.record(
        [
            replace(
                r,
                status=Status.VALID if r.key_id % 2 else Status.INVALID_KEY,
                last_checked_at=NOW,
                next_check_at=NOW + timedelta(hours=1),
            )
            for r in records
        ]
    )
    return store


async def _sync_tenth_changed(store: SqliteStore, n: int) -> None:
    """A key-file sync removing a tenth of the keys, adding as many, the rest in another file."""
    keys = _keys(n - n // 10) + _keys(n // 10, 10 * n)
    await store.sync_keys(INSTANCE, keys, MODELS, NOW, files=dict.fromkeys(keys, "keys/b.txt"))


async def _sync_models_changed(store: SqliteStore, n: int) -> None:
    """The same keys, one model dropped and another added."""
    await store.sync_keys(INSTANCE, _keys(n), (MODELS[0], "o3"), NOW)


async def _import(store: SqliteStore, n: int) -> None:
    """An import through the key admin: as many new keys as stored, and every stored one again."""
    await store.add_keys(INSTANCE, _keys(2 * n), MODELS, NOW)


async def _disable_half(store: SqliteStore, n: int) -> None:
    await store.set_disabled(KeyFilter(status=Status.VALID.value), True, NOW)


async def _delete_half(store: SqliteStore, n: int) -> None:
    await store.add_keys(INSTANCE, _keys(n), MODELS, NOW)  # keys of the key admin: deletable
    await store.sync_keys(INSTANCE, [], MODELS, NOW)  # no longer in any file
    await store.delete_keys(KeyFilter(status=Status.INVALID_KEY.value))


async def _list_every_filter(store: SqliteStore, n: int) -> None:
    for flt in (
        KeyFilter(),
        KeyFilter(instance=INSTANCE, model=MODELS[1], status=Status.VALID.value),
        KeyFilter(source="file"),
        KeyFilter(q="growth"),
    ):
        await store.list_keys(flt, after=None, limit=100)


async def _record_every_status(store: SqliteStore, n: int) -> None:
    later = NOW + timedelta(minutes=1)
    await store.record(
        [replace(r, last_checked_at=later) for r in await store.load_records(INSTANCE)]
    )


async def _usage_and_history(store: SqliteStore, n: int) -> None:
    ids = sorted({r.key_id for r in await store.load_records(INSTANCE)})
    await store.record_usage(
        [UsageDelta(i, requests=2, failures=1, last_used=NOW.timestamp()) for i in ids]
    )
    await store.record_history(
        [HistoryEntry(i, MODELS[0], Status.VALID, Status.INVALID_KEY, None, "", NOW) for i in ids]
    )


async def _load_everything(store: SqliteStore, n: int) -> None:
    await store.load_records()
    await store.stored_counts(NOW)


async def _lease_every_due(store: SqliteStore, n: int) -> None:
    await store.lease_due([INSTANCE], NOW + timedelta(hours=2), 2 * n, "me", 60)


OPERATIONS: Final[dict[str, Operation]] = {
    "key sync, a tenth of the keys changed": _sync_tenth_changed,
    "key sync, the models changed": _sync_models_changed,
    "import": _import,
    "disable by filter": _disable_half,
    "delete by filter": _delete_half,
    "list with each filter": _list_every_filter,
    "record every status": _record_every_status,
    "usage and history of every key": _usage_and_history,
    "load records and counts": _load_everything,
    "lease every due row": _lease_every_due,
}


async def _instructions(path: Path, n: int, operation: Operation) -> int:
    """SQLite VM instructions `operation` runs on a fresh pool of `n` keys (in STEPs)."""
    store = await _pool(path, n)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    assert store._conn is not None
    raw = store._conn.raw  # the store's own connection
    try:
        await raw.set_progress_handler(count, STEP)
        await operation(store, n)
        await raw.set_progress_handler(None, STEP)
    finally:
        await store.close()
    return steps


@pytest.mark.parametrize("name", OPERATIONS)
async def test_work_grows_linearly_with_the_pool(tmp_path: Path, name: str) -> None:
    """Twice the keys cost less than three times the instructions."""
    operation = OPERATIONS[name]
    small = await _instructions(tmp_path / "small.sqlite", SMALL, operation)
    large = await _instructions(tmp_path / "large.sqlite", 2 * SMALL, operation)

    assert small > 0
    assert large / small < LINEAR, f"{name}: {small} -> {large} x{STEP} instructions"
