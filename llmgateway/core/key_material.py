"""The form of `database.encryption_key`: 32 random bytes, written as hex or base64.

Both the configuration validator (which reports a malformed value) and the
store (which derives its encryption and fingerprint subkeys from the bytes)
read the value through `decode_encryption_key`, so they never disagree.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

KEY_BYTES: Final = 32
"""Bytes of an encryption key (256 bits)."""

ENCRYPTION_KEY_FORMS: Final = (
    "32 random bytes as 64 hex characters or as base64 (44 characters), "
    "e.g. from `openssl rand -hex 32`"
)

_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_BASE64: Final = re.compile(r"[A-Za-z0-9+/_-]{43}=?")


def decode_encryption_key(text: str) -> bytes:
    """The 32 bytes written in `text` (64 hex characters, or standard or URL-safe base64).

    Raises ValueError (never quoting the value) for any other form.
    """
    value = text.strip()
    if _HEX.fullmatch(value):
        return bytes.fromhex(value)
    if _BASE64.fullmatch(value):
        padded = value.rstrip("=") + "="
        try:
            raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == KEY_BYTES:
            return raw
    raise ValueError(f"is not {ENCRYPTION_KEY_FORMS}")
