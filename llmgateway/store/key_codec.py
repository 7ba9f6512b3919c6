"""How a key is kept in the store: its stored form, its fingerprint and its mask.

Every store path that writes or reads `api_keys.key_value` goes through a
`KeyCodec`. The default codec stores keys as they are and fingerprints them
with SHA-256; a store encrypted at rest uses a codec whose `seal` encrypts and
whose `fingerprint` is keyed (HMAC-SHA256), so that neither the stored value
nor the fingerprint reveals a key to someone holding only the database.

The fingerprint (64 hex characters) identifies a key within its instance:
deduplication, look-up of a key given verbatim, and the short form shown
beside a masked key (`short_fingerprint`) all use it.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterable, Mapping
from typing import Final

from llmgateway.core.masking import mask_key

FINGERPRINT_HEX: Final = 64
"""Hex characters of a stored fingerprint (a SHA-256 or HMAC-SHA256 digest)."""

SHOWN_HEX: Final = 12
"""Hex characters of the fingerprint shown to users (`short_fingerprint`)."""

_HEX: Final = frozenset(string.hexdigits)


class KeyCodec:
    """The stored form and fingerprint of keys: clear text and SHA-256 (the default).

    Subclasses change `seal`/`unseal` (encryption at rest) and `fingerprint`
    (a keyed digest) together; the store calls nothing else. Instances are
    immutable and shared by every store operation.
    """

    __slots__ = ()

    @property
    def state(self) -> str:
        """What the store records of this codec (`store_meta.key_encryption`): `none`, clear text."""
        return "none"

    def fingerprint(self, key: str) -> str:
        """The 64-hex-character fingerprint of `key` (SHA-256 of its UTF-8 bytes)."""
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def seal(self, key: str) -> str:
        """The value stored in `api_keys.key_value` for `key` (the key itself)."""
        return key

    def unseal(self, stored: str) -> str:
        """The key whose stored value is `stored` (the inverse of `seal`)."""
        return stored

    def mask(self, key: str) -> str:
        """The mask stored beside the key and shown for it (`sk-a...9f3k`, `***` when short)."""
        return mask_key(key)

    def stored_row(self, key: str) -> tuple[str, str, str]:
        """`(fingerprint, sealed value, mask)` of `key`: the three columns an insert writes."""
        return self.fingerprint(key), self.seal(key), self.mask(key)


PLAIN: Final = KeyCodec()
"""The default codec: keys stored as they are, fingerprinted with SHA-256."""


def short_fingerprint(fingerprint: str) -> str:
    """The first SHOWN_HEX hex characters of a stored fingerprint (what users see)."""
    return fingerprint[:SHOWN_HEX]


def fingerprint_prefix(text: str) -> str | None:
    """`text` as a fingerprint prefix to search for (lower-case), or None when it is not one.

    A prefix is 4 to 64 hex characters: shorter ones would match too much to
    mean anything.
    """
    value = text.strip().lower()
    if 4 <= len(value) <= FINGERPRINT_HEX and all(c in _HEX for c in value):
        return value
    return None


type StoredRow = tuple[str, str, str, str | None, int]
"""A key as a sync or an import stores it: fingerprint, sealed value, mask, source file, order."""


def stored_rows(
    codec: KeyCodec, keys: Iterable[str], files: Mapping[str, str] | None = None
) -> list[StoredRow]:
    """The rows of `keys` (blanks and repeats left out), each with its file from `files` (or None).

    CPU-bound for large lists: run it on a thread.
    """
    sources = files or {}
    seen: set[str] = set()
    rows: list[StoredRow] = []
    for key in keys:  # a Python loop, not one call into C: a thread running it yields the GIL
        if key and key not in seen:
            seen.add(key)
            rows.append((*codec.stored_row(key), sources.get(key), len(rows)))
    return rows
