"""Rewriting every stored key from one codec to another (encrypt, decrypt, rotate the key).

The keys are rewritten in id order, one transaction per batch; each batch
also records how far it went (`store_meta.key_migration`), so a command that
stops halfway (a crash, Ctrl-C) resumes after the last batch it committed,
and until it finishes the store refuses to start (see `key_encryption`).
Every column derived from a key's value is rewritten with it: the sealed
value and the fingerprint (the mask does not depend on the codec). At the
end the database is compacted so the former values do not linger in free
pages (SQLite: VACUUM and a WAL checkpoint; PostgreSQL: VACUUM FULL of api_keys).

Run it with the gateway stopped: a process still running reads keys with
the codec it started with. A gateway whose keeper runs holds the store's
`keeper` lock, and one syncing keys the `keysync` lock: the rewrite takes
both first and refuses to start while another process holds either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from llmgateway.core.errors import KeyEncryptionMismatch, StoreError
from llmgateway.store.engine import Conn, SqlStore
from llmgateway.store.key_codec import KeyCodec
from llmgateway.store.key_encryption import (
    CLEAR,
    KEY_ENCRYPTION,
    KEY_MIGRATION,
    decode_progress,
    delete_meta,
    encode_progress,
    put_meta,
    read_meta,
)
from llmgateway.store.migrations import Engine
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.sqlite import SqliteStore

BATCH: Final = 1000
"""Keys rewritten per transaction by default."""

_PAGE: Final = "SELECT id, key_value FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2"
_REWRITE: Final = "UPDATE api_keys SET fingerprint = $1, key_value = $2 WHERE id = $3"


@dataclass(frozen=True, slots=True)
class Rekeying:
    """One run: the command's name (in messages and the progress record) and its two codecs."""

    command: str
    source: KeyCodec
    target: KeyCodec


@dataclass(frozen=True, slots=True)
class RekeyReport:
    """What a run did: keys rewritten by this run, and whether there was nothing to do."""

    rewritten: int
    already_done: bool


def _unexpected(stored: str, command: str) -> str:
    """Why `command` cannot start on keys stored as `stored`."""
    if stored == CLEAR:
        return "the stored keys are not encrypted: `llmgateway keys encrypt` encrypts them"
    if command == "encrypt":
        return (
            "the stored keys are already encrypted with another key: set that key as "
            "database.encryption_key and run `llmgateway keys rotate-encryption-key`"
        )
    return (
        "the stored keys are not encrypted with database.encryption_key: set the key "
        "they were encrypted with"
    )


async def _begin(conn: Conn, run: Rekeying) -> int | None:
    """The last key id already rewritten (0 at a fresh start), or None when nothing is to do."""
    meta = await read_meta(conn)
    if KEY_MIGRATION in meta:
        progress = decode_progress(meta[KEY_MIGRATION])
        if (progress.get("from"), progress.get("to")) != (run.source.state, run.target.state):
            raise KeyEncryptionMismatch(
                f"an unfinished `llmgateway keys {progress.get('command')}` went between other "
                "keys: run it again with the keys it started with"
            )
        return int(progress.get("through", 0))
    stored = meta.get(KEY_ENCRYPTION, CLEAR)
    if stored == run.target.state:
        return None
    if stored != run.source.state:
        raise KeyEncryptionMismatch(_unexpected(stored, run.command))
    await _note(conn, run, 0)
    return 0


async def _note(conn: Conn, run: Rekeying, through: int) -> None:
    progress = encode_progress(run.command, run.source.state, run.target.state, through)
    await put_meta(conn, KEY_MIGRATION, progress)


async def _step(conn: Conn, run: Rekeying, through: int, batch: int) -> tuple[int, int]:
    """Rewrite the next `batch` keys after id `through`; (how many, the last id)."""
    rows = await conn.fetch(_PAGE, through, batch)
    if not rows:
        return 0, through
    updates = []
    for row in rows:
        key = run.source.unseal(str(row[1]))
        updates.append((run.target.fingerprint(key), run.target.seal(key), int(row[0])))
    await conn.executemany(_REWRITE, updates)
    last = int(rows[-1][0])
    await _note(conn, run, last)
    return len(rows), last


async def _finish(conn: Conn, run: Rekeying) -> None:
    await put_meta(conn, KEY_ENCRYPTION, run.target.state)
    await delete_meta(conn, KEY_MIGRATION)


class StoreInUse(StoreError):
    """A gateway's keeper or key sync holds its lock on the store: it is running."""


async def rekey(
    store: SqliteStore | PostgresStore,
    run: Rekeying,
    *,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> RekeyReport:
    """Rewrite every stored key from `run.source` to `run.target`, resuming an unfinished run.

    `store` must be open without the start-up check (`verify_codec=False`).
    `progress` is called with the running count after each batch. The store's
    `keeper` and `keysync` locks are held throughout: StoreInUse when a
    running gateway holds either. Raises KeyEncryptionMismatch when the store
    is not kept with `run.source` (nor halfway from it to `run.target`), and
    KeyDecryptionError (a StoreError) when a stored value does not decrypt;
    the batch in progress is rolled back.
    """
    async with store.exclusive("keeper") as keeper, store.exclusive("keysync") as syncing:
        if not (keeper and syncing):
            raise StoreInUse(
                "a running gateway holds the store's keeper or key sync lock: stop it, "
                f"then run `llmgateway keys {run.command}` again"
            )
        return await _rewrite(store, run, batch, progress)


async def _rewrite(
    store: SqlStore, run: Rekeying, batch: int, progress: Callable[[int], None] | None
) -> RekeyReport:
    begun = await store._write(f"starting keys {run.command}", lambda c: _begin(c, run))
    if begun is None:
        return RekeyReport(0, already_done=True)
    done, through = 0, begun
    while True:
        count, through = await store._write(
            f"keys {run.command}", functools.partial(_step, run=run, through=through, batch=batch)
        )
        if not count:
            break
        done += count
        if progress is not None:
            progress(done)
    await store._write(f"finishing keys {run.command}", lambda c: _finish(c, run))
    await compact(store)
    return RekeyReport(done, already_done=False)


async def compact(store: SqlStore) -> None:
    """Rewrite the key table's storage so former key values do not stay in free space."""
    if store.sql.engine is Engine.SQLITE:
        script = "VACUUM; PRAGMA wal_checkpoint(TRUNCATE)"
    else:
        script = "VACUUM FULL api_keys"
    await store._read("compacting", lambda c: c.script(script))
