"""The default key codec: keys stored as they are, SHA-256 fingerprints, masks as shown."""

from __future__ import annotations

import hashlib

import pytest

from llmgateway.store.fingerprints import fingerprinted
from llmgateway.store.key_codec import (
    PLAIN,
    KeyCodec,
    fingerprint_prefix,
    short_fingerprint,
)

KEY = "sk-proj-abcdefghijklmnop0123456789"


def test_fingerprint_is_the_sha256_hex_of_the_key() -> None:
    """64 lower-case hex characters, the SHA-256 of the key's UTF-8 bytes."""
    assert PLAIN.fingerprint(KEY) == hashlib.sha256(KEY.encode()).hexdigest()
    assert len(PLAIN.fingerprint("ключ")) == 64


def test_different_keys_have_different_fingerprints() -> None:
    """A one-character difference changes the fingerprint."""
    assert PLAIN.fingerprint(KEY) != PLAIN.fingerprint(KEY[:-1] + "8")


def test_plain_codec_stores_keys_as_they_are() -> None:
    """seal and unseal are the identity; the stored row is (fingerprint, key, mask)."""
    assert PLAIN.seal(KEY) == KEY
    assert PLAIN.unseal(PLAIN.seal(KEY)) == KEY
    assert PLAIN.stored_row(KEY) == (PLAIN.fingerprint(KEY), KEY, "sk-p...6789")


def test_short_keys_are_masked_whole() -> None:
    """Keys of 12 characters or fewer show nothing of themselves."""
    assert PLAIN.mask("short-key-12") == "***"


def test_short_fingerprint_is_the_first_twelve_hex() -> None:
    """What users see beside a masked key."""
    full = PLAIN.fingerprint(KEY)
    assert short_fingerprint(full) == full[:12]


@pytest.mark.parametrize(
    ("text", "prefix"),
    [("ABCD", "abcd"), (" 0123abcdef ", "0123abcdef"), ("a" * 64, "a" * 64)],
)
def test_hex_text_is_a_fingerprint_prefix(text: str, prefix: str) -> None:
    """4 to 64 hex characters, compared lower-case."""
    assert fingerprint_prefix(text) == prefix


@pytest.mark.parametrize("text", ["abc", "a" * 65, "sk-a...9f3k", "xyz1", ""])
def test_other_text_is_not_a_fingerprint_prefix(text: str) -> None:
    """Too short, too long, or not hex."""
    assert fingerprint_prefix(text) is None


class _Reversed(KeyCodec):
    """A codec whose stored form differs from the key (stands in for encryption)."""

    __slots__ = ()

    def seal(self, key: str) -> str:
        return key[::-1]

    def unseal(self, stored: str) -> str:
        return stored[::-1]


def test_the_migration_step_fingerprints_the_unsealed_key() -> None:
    """Stored values are unsealed before fingerprinting and masking, whatever the codec."""
    codec = _Reversed()
    rows = [(7, codec.seal(KEY)), (9, codec.seal("tiny"))]
    assert fingerprinted(codec, rows) == [
        (PLAIN.fingerprint(KEY), "sk-p...6789", 7),
        (PLAIN.fingerprint("tiny"), "***", 9),
    ]
