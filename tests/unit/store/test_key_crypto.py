"""The AES-GCM key codec and the form of database.encryption_key."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from llmgateway.config.schemas import DatabaseConfig
from llmgateway.core.errors import ConfigError
from llmgateway.core.key_material import decode_encryption_key
from llmgateway.store import open_store
from llmgateway.store.key_codec import PLAIN
from llmgateway.store.key_crypto import AesGcmCodec, KeyDecryptionError, codec_for

MASTER = bytes(range(32))
HEX = MASTER.hex()
KEY = "sk-proj-encrypted-at-rest-0123456789"


def test_the_key_is_32_bytes_as_hex_or_base64() -> None:
    """Hex, standard and URL-safe base64 (padded or not) name the same 32 bytes."""
    forms = [
        HEX,
        HEX.upper(),
        base64.b64encode(MASTER).decode(),
        base64.urlsafe_b64encode(MASTER).decode().rstrip("="),
    ]
    assert {decode_encryption_key(f) for f in forms} == {MASTER}


@pytest.mark.parametrize(
    "text", ["passphrase-of-some-length", HEX[:-2], HEX + "00", "!" * 44, "A" * 43 + "=="]
)
def test_any_other_form_is_refused_without_quoting_it(text: str) -> None:
    """Short, long or non-hex/base64 values are refused; the message never holds the value."""
    with pytest.raises(ValueError, match="32 random bytes") as caught:
        decode_encryption_key(text)
    assert text not in str(caught.value)


def test_seal_uses_a_fresh_nonce_and_round_trips() -> None:
    """Two seals of one key differ (fresh nonce), both unseal to it; the form is versioned."""
    codec = AesGcmCodec(MASTER)
    first, second = codec.seal(KEY), codec.seal(KEY)
    assert first != second
    assert first.startswith("enc1:") and KEY not in first
    assert len(base64.b64decode(first.removeprefix("enc1:"))) == 12 + len(KEY) + 16
    assert codec.unseal(first) == codec.unseal(second) == KEY


def test_the_fingerprint_is_a_keyed_hmac_from_a_derived_subkey() -> None:
    """Not SHA-256 of the key, not an HMAC under the configured bytes; stable per key."""
    codec = AesGcmCodec(MASTER)
    fingerprint = codec.fingerprint(KEY)
    assert len(fingerprint) == 64 and fingerprint == AesGcmCodec(MASTER).fingerprint(KEY)
    assert fingerprint != PLAIN.fingerprint(KEY)
    assert fingerprint != hmac.new(MASTER, KEY.encode(), hashlib.sha256).hexdigest()
    assert fingerprint != AesGcmCodec(bytes(32)).fingerprint(KEY)


def test_the_state_names_the_key_by_a_check_value_only() -> None:
    """`aes-gcm:<64 hex>`, different per key, never containing the key's bytes."""
    state = AesGcmCodec(MASTER).state
    assert state.startswith("aes-gcm:") and len(state) == len("aes-gcm:") + 64
    assert HEX not in state
    assert state != AesGcmCodec(bytes(32)).state
    assert PLAIN.state == "none"


@pytest.mark.parametrize("stored", [KEY, "enc1:not-base64!", "enc1:" + "A" * 40])
def test_unseal_refuses_a_clear_or_damaged_value(stored: str) -> None:
    """A value not sealed by this codec raises KeyDecryptionError (its text holds no value)."""
    with pytest.raises(KeyDecryptionError) as caught:
        AesGcmCodec(MASTER).unseal(stored)
    assert KEY not in str(caught.value)


def test_another_key_cannot_unseal() -> None:
    """AES-GCM authenticates: a value sealed under one key fails under another."""
    sealed = AesGcmCodec(MASTER).seal(KEY)
    with pytest.raises(KeyDecryptionError):
        AesGcmCodec(bytes(32)).unseal(sealed)


def test_codec_for_the_setting() -> None:
    """ "" is the plain codec (nothing changes); a key gives the AES-GCM codec."""
    assert codec_for("") is PLAIN
    assert codec_for(HEX).state == AesGcmCodec(MASTER).state


def test_open_store_refuses_a_malformed_key_as_a_config_error() -> None:
    """A key that bypassed the validator still never reaches the store."""
    with pytest.raises(ConfigError, match="encryption_key"):
        open_store(DatabaseConfig(url="sqlite:///:memory:", encryption_key="short"))
