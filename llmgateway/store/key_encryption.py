"""What the store records of its key encryption (`store_meta`), and the start-up check.

The store records whether its keys are encrypted and, when they are, the
check value of the key (`KeyCodec.state`). Opening it with a codec that does
not match fails with a KeyEncryptionMismatch naming what to run, before any
key is read: never garbage keys. A store that holds no key yet takes the
codec it is opened with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

import orjson

from llmgateway.core.errors import KeyEncryptionMismatch
from llmgateway.store.key_codec import KeyCodec

ENCRYPTION_MIGRATION: Final = "encryption"
"""The name of the schema migration that creates `store_meta` (0008_encryption)."""

KEY_ENCRYPTION: Final = "key_encryption"
KEY_MIGRATION: Final = "key_migration"
CLEAR: Final = "none"
"""The `key_encryption` value of a store whose keys are stored in clear."""

NEW_KEY_VARIABLE: Final = "LLMGW_NEW_ENCRYPTION_KEY"
"""The environment variable `keys rotate-encryption-key` reads the new key from."""

_READ_META: Final = "SELECT name, value FROM store_meta"
_PUT_META: Final = (
    "INSERT INTO store_meta (name, value) VALUES ($1, $2) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
_DELETE_META: Final = "DELETE FROM store_meta WHERE name = $1"
_ANY_KEY: Final = "SELECT 1 FROM api_keys LIMIT 1"


class MetaConn(Protocol):
    """The part of an engine connection this module uses."""

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        """The rows `sql` returns."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run `sql`; the number of rows it changed."""


async def read_meta(conn: MetaConn) -> dict[str, str]:
    """Every `store_meta` row, name to value."""
    return {str(row[0]): str(row[1]) for row in await conn.fetch(_READ_META)}


async def put_meta(conn: MetaConn, name: str, value: str) -> None:
    """Set the `store_meta` row `name` to `value`."""
    await conn.execute(_PUT_META, name, value)


async def delete_meta(conn: MetaConn, name: str) -> None:
    """Remove the `store_meta` row `name`."""
    await conn.execute(_DELETE_META, name)


def encode_progress(command: str, source: str, target: str, through: int) -> str:
    """The `key_migration` value: which command goes from which codec to which, and how far."""
    doc = {"command": command, "from": source, "to": target, "through": through}
    return orjson.dumps(doc).decode()


def decode_progress(value: str) -> dict[str, Any]:
    """The `key_migration` value as written by `encode_progress`."""
    doc = orjson.loads(value)
    if not isinstance(doc, dict):
        raise KeyEncryptionMismatch("store_meta.key_migration is damaged")
    return doc


def mismatch(stored: str, configured: str) -> str | None:
    """Why a store whose keys are `stored` cannot be used with codec state `configured`, or None."""
    if stored == configured:
        return None
    if stored == CLEAR:
        return (
            "database.encryption_key is set but the stored keys are not encrypted: run "
            "`llmgateway keys encrypt` (with the key set) to encrypt them, or unset "
            "database.encryption_key"
        )
    if configured == CLEAR:
        return (
            "the stored keys are encrypted but database.encryption_key is not set: set it "
            "to the key they were encrypted with (then `llmgateway keys decrypt` stores them "
            "in clear, if that is what you want)"
        )
    return (
        "database.encryption_key is not the key the stored keys were encrypted with: set "
        "the right key, or, with the old key set, run `llmgateway keys rotate-encryption-key` "
        f"with the new key in ${NEW_KEY_VARIABLE}"
    )


async def check_codec(conn: MetaConn, codec: KeyCodec) -> None:
    """Raise KeyEncryptionMismatch unless `codec` reads the store's keys (run in a transaction).

    A store holding no key (and no unfinished migration) takes `codec`'s state.
    """
    meta = await read_meta(conn)
    if KEY_MIGRATION in meta:
        command = decode_progress(meta[KEY_MIGRATION]).get("command", "encrypt")
        raise KeyEncryptionMismatch(
            f"the stored keys are halfway through `llmgateway keys {command}`: "
            "run it again (with the same keys) to finish it"
        )
    stored = meta.get(KEY_ENCRYPTION, CLEAR)
    problem = mismatch(stored, codec.state)
    if problem is None:
        return
    if not await conn.fetch(_ANY_KEY):
        await put_meta(conn, KEY_ENCRYPTION, codec.state)
        return
    raise KeyEncryptionMismatch(problem)
