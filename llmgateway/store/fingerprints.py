"""The data step of migration 6: fingerprints and masks of the keys stored before it.

A fingerprint comes from a key codec, which SQL cannot compute, so the
migration file only names this step; each engine runs it in the migration's
transaction, with every stored key, before the version is recorded. Keys
stored before migration 8 are in clear: the step runs with the plain codec
(SHA-256), and `llmgateway keys encrypt` later rewrites the fingerprints with
the keyed one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from llmgateway.store.key_codec import KeyCodec

KEY_FINGERPRINTS: Final = "key_fingerprints"
"""The step's name, as a migration file names it (`-- step: key_fingerprints`)."""


def fingerprinted(codec: KeyCodec, rows: Iterable[tuple[int, str]]) -> list[tuple[str, str, int]]:
    """`(fingerprint, mask, id)` for each `(id, stored key_value)` row, in the rows' order."""
    updates: list[tuple[str, str, int]] = []
    for key_id, stored in rows:
        key = codec.unseal(stored)
        updates.append((codec.fingerprint(key), codec.mask(key), key_id))
    return updates
