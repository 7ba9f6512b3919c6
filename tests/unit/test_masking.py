"""Masking: every form of a key (raw, JSON-escaped, percent-encoded, base64) in any text."""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import quote

import pytest

from llmgateway.core.masking import SECRET_SHARDS, KeyPattern, Masker, mask_key, same_length_mask

KEY = "sk-proj-AbCdEf0123456789xyzW9f3k"
OTHER = "AIzaSyExampleRealKey0123456789abcdef"


def json_escaped(text: str) -> str:
    """Every character as a JSON `\\uXXXX` escape."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def percent_encoded(text: str) -> str:
    """Every byte percent-encoded."""
    return "".join(f"%{b:02X}" for b in text.encode())


FORMS = {
    "raw": lambda k: k,
    "json": json_escaped,
    "json-upper": lambda k: json_escaped(k).upper().replace("\\U", "\\u"),
    "percent": percent_encoded,
    "quote": lambda k: quote(k, safe=""),
    "base64": lambda k: base64.b64encode(k.encode()).decode(),
    "base64-urlsafe-unpadded": lambda k: base64.urlsafe_b64encode(k.encode()).decode().rstrip("="),
}


def leaks(text: str, key: str) -> list[str]:
    """The forms of `key` found in `text`."""
    return [name for name, form in FORMS.items() if form(key) in text]


class TestMasks:
    def test_same_length_mask_keeps_the_length(self) -> None:
        """The mask used in relayed bodies is as long as the key and shows 4 + 4 characters."""
        mask = same_length_mask(KEY)
        assert len(mask) == len(KEY)
        assert mask.startswith(KEY[:4]) and mask.endswith(KEY[-4:]) and "*" in mask

    def test_short_keys_are_hidden_whole(self) -> None:
        """Short keys show nothing, in both masks."""
        assert same_length_mask("abcdefgh") == "********"
        assert mask_key("abcdefgh") == "***"


class TestMasker:
    @pytest.mark.parametrize("form", sorted(FORMS))
    def test_every_form_is_masked(self, form: str) -> None:
        """A key is masked whatever form it takes in the text."""
        masker = Masker([KEY])
        text = f"Consumer 'api_key:{FORMS[form](KEY)}' has been suspended."
        masked = masker.mask_text(text)
        assert leaks(masked, KEY) == []
        assert masked.startswith("Consumer 'api_key:") and masked.endswith("' has been suspended.")

    def test_escaped_form_becomes_the_plain_mask(self) -> None:
        """An escaped key is replaced by the readable mask, the rest of the text unchanged."""
        masker = Masker([KEY])
        assert masker.mask_text(f'"x-key": "{json_escaped(KEY)}"') == f'"x-key": "{mask_key(KEY)}"'
        assert masker.mask_text(f"?key={percent_encoded(KEY)}&a=1") == f"?key={mask_key(KEY)}&a=1"

    def test_partly_escaped_key_is_masked(self) -> None:
        """A key with only some characters escaped (`sk\\u002d...`) is still found."""
        masker = Masker([KEY])
        text = KEY.replace("-", "\\u002d") + " and " + KEY.replace("-", "%2D")
        assert leaks(masker.mask_text(text), KEY) == []
        assert "-" not in masker.mask_text(text).replace(mask_key(KEY), "")

    @pytest.mark.parametrize("prefix", ["", "a", "ab", "Bearer ", "api_key:"])
    def test_base64_of_a_longer_text_is_masked(self, prefix: str) -> None:
        """The key inside base64 of a longer text (any alignment) is masked; the rest decodes."""
        masker = Masker([KEY])
        encoded = base64.b64encode(f"{prefix}{KEY}!".encode()).decode()
        masked = masker.mask_text(f"echo: {encoded}")
        decoded = base64.b64decode(masked.removeprefix("echo: "))
        assert decoded == f"{prefix}{mask_key(KEY)}!".encode()

    def test_every_known_key_is_masked_not_only_one(self) -> None:
        """All the masker's secrets are masked at once, each in its own form."""
        masker = Masker([KEY, OTHER])
        text = f"{json_escaped(KEY)} {base64.b64encode(OTHER.encode()).decode()}"
        masked = masker.mask_text(text)
        assert leaks(masked, KEY) == [] and leaks(masked, OTHER) == []

    def test_text_without_secrets_is_returned_unchanged(self) -> None:
        """Base64, escapes and percent signs that hold no key stay exactly as they were."""
        masker = Masker([KEY])
        text = (
            "a\\u0062c %41%42 dGhpcyBpcyBub3QgYSBrZXkgYXQgYWxs== 100% "
            + base64.b64encode(b"\x00\xff" * 40).decode()
        )
        assert masker.mask_text(text) == text

    def test_bytes_keep_their_non_ascii_content(self) -> None:
        """mask_bytes masks keys and leaves UTF-8 text around them intact."""
        masker = Masker([KEY])
        data = f"é {KEY} ✓".encode()
        assert masker.mask_bytes(data) == f"é {mask_key(KEY)} ✓".encode()

    def test_json_stays_valid_after_masking(self) -> None:
        """Masking an escaped key inside a JSON string keeps the document parseable."""
        masker = Masker([KEY])
        document = json.dumps(
            {"error": {"message": f"bad key \u0022{KEY}\u0022"}}, ensure_ascii=True
        )
        document = document.replace(KEY, json_escaped(KEY))
        assert json.loads(masker.mask_text(document))["error"]["message"] == (
            f'bad key "{mask_key(KEY)}"'
        )

    def test_remember_is_idempotent(self) -> None:
        """remember adds a key once; again is a no-op."""
        masker = Masker()
        masker.remember(KEY)
        masker.remember(KEY)
        masker.remember("")
        assert len(masker) == 1 and KEY in masker

    def test_cost_does_not_depend_on_the_number_of_keys(self) -> None:
        """With 20,000 keys any of them is found in every form (set look-ups, not alternations)."""
        keys = [f"sk-proj-{i:06d}-abcdefghijklmnop" for i in range(20_000)]
        masker = Masker(keys)
        text = " ".join(FORMS[form](keys[12_345]) for form in FORMS)
        assert leaks(masker.mask_text(text), keys[12_345]) == []

    def test_a_long_run_without_escapes_is_scanned_once(self) -> None:
        """A megabyte of token characters with one backslash and one % is handled quickly."""
        masker = Masker([KEY])
        text = "a" * 1_000_000 + "\\ %"
        assert masker.mask_text(text) == text


def relay(pattern: KeyPattern, chunks: list[bytes]) -> list[bytes]:
    """What the gateway's relay loop sends for `chunks` (its own checks, then `split`)."""
    sent: list[bytes] = []
    held = b""
    for chunk in chunks:
        ready = chunk
        if held or chunk.find(pattern.raw) != -1 or chunk[-1] in pattern.chars:
            ready, held = pattern.split(held + chunk)
        sent.append(ready)
    sent.append(held)  # the end of the stream releases what was held back
    return sent


class TestKeyPattern:
    def test_whole_body(self) -> None:
        """The key is masked in a whole body, its length kept."""
        body = f'{{"echo": "{KEY}"}}'.encode()
        out = KeyPattern(KEY).whole(body)
        assert KEY.encode() not in out and len(out) == len(body)

    @pytest.mark.parametrize("cut", range(1, len(KEY)))
    def test_a_key_split_across_two_chunks(self, cut: int) -> None:
        """A key cut anywhere between two chunks is masked; nothing is lost or repeated."""
        body = f"data: {KEY} end\n\n".encode()
        split = body.index(KEY.encode()) + cut
        sent = relay(KeyPattern(KEY), [body[:split], body[split:]])
        assert b"".join(sent) == body.replace(KEY.encode(), same_length_mask(KEY).encode())

    def test_a_held_back_tail_that_was_not_the_key_is_sent(self) -> None:
        """A chunk ending like the key's start is held, then sent unchanged with the next one."""
        sent = relay(KeyPattern(KEY), [b"token: sk-pr", b"ose\n"])
        assert sent == [b"token: ", b"sk-prose\n", b""]

    def test_the_end_of_the_stream_releases_the_tail(self) -> None:
        """What was held back at the end of the stream is sent when it ends."""
        assert relay(KeyPattern(KEY), [b"abc sk-"]) == [b"abc ", b"sk-"]

    def test_sse_chunks_pass_at_once(self) -> None:
        """A chunk ending in a newline is never held back."""
        chunk = b'data: {"choices": [{"delta": {"content": "sk"}}]}\n\n'
        assert relay(KeyPattern(KEY), [chunk]) == [chunk, b""]

    @pytest.mark.parametrize("form", sorted(FORMS))
    def test_every_form_is_found_in_headers(self, form: str) -> None:
        """appears_in finds the key in any form, alone or inside a longer encoded value."""
        pattern = KeyPattern(KEY)
        assert pattern.appears_in(f"x-echo: {FORMS[form](KEY)}\nserver: nginx")
        wrapped = base64.b64encode(f"Bearer {KEY}".encode()).decode()
        assert pattern.appears_in(wrapped)
        assert not pattern.appears_in("x-request-id: req_0123456789abcdef\nserver: nginx")

    @pytest.mark.parametrize("lead", [b"", b"x", b"xy"])
    @pytest.mark.parametrize("urlsafe", [False, True])
    def test_base64_with_plus_and_slash_is_found_at_every_alignment(
        self, lead: bytes, urlsafe: bool
    ) -> None:
        """A key whose base64 holds `+` and `/` is found in either alphabet, after any prefix."""
        key = "sk-~~~>>>???-0123456789abcdef"
        encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
        text = encode(lead + key.encode()).decode()
        assert ("-" in text and "_" in text) if urlsafe else ("+" in text and "/" in text)
        assert KeyPattern(key).appears_in(f"x-echo: {text}\nserver: nginx")
        assert not KeyPattern(key).appears_in(f"x-echo: {encode(lead + b'sk-other').decode()}")

    @pytest.mark.parametrize("size", [8, 9, 10, 13, 20, 31, 51, 52, 53])
    def test_base64_of_a_key_of_any_length_passes_the_run_screen(self, size: int) -> None:
        """Whatever its length (from ENCODED_MIN), a key in base64 in a value is found at every alignment.

        The screen skips the base64 search when no run of base64 is as long as
        the key's shortest form: that length must never be overestimated.
        """
        key = ("sk-" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP")[:size]
        for lead in (b"", b"x", b"xy"):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                text = encode(lead + key.encode()).decode().rstrip("=")
                assert KeyPattern(key).appears_in(f"date: today\nx-echo: {text}")

    def test_short_runs_of_base64_skip_the_search(self) -> None:
        """Header values shorter than the key's shortest form are not searched for it."""
        pattern = KeyPattern(KEY)
        assert not pattern.appears_in("application/json\nreq_0123456789abcdef\nkeep-alive")
        assert pattern._base64 is None  # the forms were never needed

    def test_a_pattern_is_made_cheaply_and_completed_on_demand(self) -> None:
        """Making a pattern only encodes the key; its base64 forms and bytes come when asked."""
        pattern = KeyPattern(KEY)
        assert pattern.raw == KEY.encode()
        assert len(pattern.base64_forms()) == 3
        assert pattern.base64_forms() is pattern.base64_forms()
        assert set(KEY.encode()) <= pattern.chars


async def test_adding_off_the_loop_keeps_what_was_added_meanwhile() -> None:
    """Secrets added on the loop while the index is built on a thread are not lost."""
    masker = Masker(["sk-first-0123456789abcdef"])
    pending = asyncio.ensure_future(
        masker.add_off_loop([f"sk-bulk-{i:06d}-0123456789" for i in range(20_000)])
    )
    await asyncio.sleep(0)
    masker.add(["sk-meanwhile-0123456789abcdef"])
    await pending
    text = "sk-first-0123456789abcdef sk-meanwhile-0123456789abcdef sk-bulk-000123-0123456789"
    assert masker.mask_text(text) == "sk-f...cdef sk-m...cdef sk-b...6789"
    assert len(masker) == 20_002


def test_secrets_added_later_join_every_kind_already_known() -> None:
    """An index extended with new secrets keeps the plain and hand-written ones it had.

    Each form is still found: a shorter plain key added later, the earlier
    longer one, and a token with characters no plain key has.
    """
    masker = Masker(["sk-long-0123456789abcdef0123", "token with spaces!"])
    masker.add(["sk-short-012345", "sk-long-0123456789abcdef0123"])
    assert len(masker) == 3
    text = "sk-long-0123456789abcdef0123 / sk-short-012345 / token with spaces!"
    assert masker.mask_text(text) == "sk-l...0123 / sk-s...2345 / toke...ces!"
    encoded = base64.b64encode(b"sk-short-012345").decode()
    assert masker.mask_text(encoded) != encoded


def test_keys_spread_over_every_shard_are_all_masked_after_additions() -> None:
    """Thousands of keys, added in two batches: each shard holds some, and every key is masked.

    The second batch extends the first batch's shards (copied one by one); a
    repeat of a known key counts once.
    """
    first = [f"sk-shard-{i:05d}-0123456789" for i in range(2000)]
    second = [f"sk-later-{i:05d}-0123456789" for i in range(1500)]
    masker = Masker(first)
    masker.add([*second, first[0]])
    assert len(masker) == 3500
    assert masker._index.count == 3500 and all(masker._index.plain)
    assert len(masker._index.plain) == SECRET_SHARDS
    for key in (*first[::97], *second[::89]):
        assert key in masker
        assert masker.mask_text(f"key={key};") == f"key={mask_key(key)};"
    assert "sk-shard-99999-0123456789" not in masker
