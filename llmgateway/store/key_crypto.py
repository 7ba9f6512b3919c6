"""Keys encrypted at rest: the AES-GCM codec built from `database.encryption_key`.

From the 32 configured bytes, HKDF-SHA256 derives three independent subkeys
(the configured bytes themselves are used for nothing else):

- the AES-256-GCM key that seals each stored key value, with a fresh random
  96-bit nonce per value; the stored form is `enc1:<base64(nonce | ciphertext)>`;
- the HMAC-SHA256 key of the fingerprint (deduplication and look-up by key);
- the HMAC-SHA256 key of the key check value: the store records that value
  (never the key), so opening it with another key fails at start-up instead of
  yielding garbage keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Final

from llmgateway.core.errors import StoreError
from llmgateway.core.key_material import decode_encryption_key
from llmgateway.store.key_codec import PLAIN, KeyCodec

SEALED_PREFIX: Final = "enc1:"
"""Starts every stored value sealed by this codec (version 1: AES-256-GCM, 96-bit nonce)."""

STATE_PREFIX: Final = "aes-gcm:"
"""Starts the store's `key_encryption` record when keys are encrypted (then the check value)."""

_NONCE_BYTES: Final = 12
_CHECK_TEXT: Final = b"llmgateway encryption key check"


class KeyDecryptionError(StoreError):
    """A stored key value does not decrypt with the configured key (another key, or damaged)."""


def _subkey(master: bytes, purpose: str) -> bytes:
    """The 32-byte subkey of `master` for `purpose` (HKDF-SHA256, no salt, purpose as info)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
    return hkdf.derive(master)


class AesGcmCodec(KeyCodec):
    """Seals keys with AES-256-GCM and fingerprints them with a keyed HMAC-SHA256.

    Immutable and shared by every store operation, like the plain codec.
    `cryptography` is imported when the first one is made: a process without
    an encryption key never loads it (several MiB resident).
    """

    __slots__ = ("_aead", "_check", "_fingerprinter", "_invalid")

    def __init__(self, master: bytes) -> None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._invalid = InvalidTag
        self._aead = AESGCM(_subkey(master, "llmgateway key encryption v1"))
        # Keyed once: each fingerprint copies this state instead of re-deriving the HMAC pads.
        self._fingerprinter = hmac.new(
            _subkey(master, "llmgateway key fingerprint v1"), digestmod=hashlib.sha256
        )
        check_key = _subkey(master, "llmgateway key check v1")
        self._check = hmac.new(check_key, _CHECK_TEXT, hashlib.sha256).hexdigest()

    @property
    def state(self) -> str:
        """`aes-gcm:<check value>`: names this key without revealing it."""
        return STATE_PREFIX + self._check

    def fingerprint(self, key: str) -> str:
        """HMAC-SHA256 of the key's UTF-8 bytes under the fingerprint subkey (64 hex)."""
        digest = self._fingerprinter.copy()
        digest.update(key.encode("utf-8"))
        return digest.hexdigest()

    def seal(self, key: str) -> str:
        """`enc1:` + base64 of a fresh random nonce and the ciphertext (with its tag)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, key.encode("utf-8"), None)
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, stored: str) -> str:
        """The key sealed in `stored`; KeyDecryptionError when it is not sealed with this key."""
        if not stored.startswith(SEALED_PREFIX):
            raise KeyDecryptionError("a stored key is not encrypted (expected enc1:...)")
        try:
            raw = base64.b64decode(stored.removeprefix(SEALED_PREFIX), validate=True)
            clear = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None)
            return clear.decode("utf-8")
        except (binascii.Error, self._invalid, ValueError) as exc:
            raise KeyDecryptionError(
                "a stored key does not decrypt with database.encryption_key"
            ) from exc


def codec_for(encryption_key: str) -> KeyCodec:
    """The codec of a `database.encryption_key` value: PLAIN for "", else an AesGcmCodec.

    Raises ValueError when the value is not a valid key (the validator reports it first).
    """
    if not encryption_key:
        return PLAIN
    return AesGcmCodec(decode_encryption_key(encryption_key))
