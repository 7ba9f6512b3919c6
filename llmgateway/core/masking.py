"""Masking secrets: the one place that knows what a key looks like, raw or encoded.

`Masker` holds every key and token of the process and replaces each one found
in a text by its mask, whatever form it takes there: raw, JSON `\\u`-escaped,
percent-encoded, or base64 (standard or URL-safe, alone or inside a longer
encoded text). Every text that comes from an upstream answer, every log line
and every admin document goes through it. `KeyPattern` is the cheap variant
for the request path: one key (the attempt's), prepared once; it finds the key
in any form in a success answer's headers, and masks it raw in the body and
in stream chunks (a key split across two chunks included).
"""

from __future__ import annotations

import asyncio
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

SHORT_KEY: Final = 12
"""Keys of this many characters or fewer are masked whole (`***`)."""

ENCODED_MIN: Final = 8
"""Secrets shorter than this are masked in raw form only (their encodings are too common)."""

SECRET_SHARDS: Final = 64
"""Small sets the plain secrets are spread over (by hash), so no index build copies one big set."""
_SHARD_MASK: Final = SECRET_SHARDS - 1

_TOKEN_CHARS: Final = "A-Za-z0-9_.\\-"
_PLAIN_SECRET: Final = re.compile(f"[{_TOKEN_CHARS}]+")

# A run of token characters holding at least one JSON escape (`\u0073`, `\/`). The look-behind
# makes a match start only where a run starts, so a long run is scanned once, not once per
# position; the possessive quantifiers never backtrack.
_JSON_RUN: Final = re.compile(
    r"(?<![A-Za-z0-9_.\-\\])[A-Za-z0-9_.\-]*+(?:(?:\\u[0-9A-Fa-f]{4}|\\/)[A-Za-z0-9_.\-]*+)+"
)
_JSON_UNIT: Final = re.compile(r"\\u([0-9A-Fa-f]{4})|\\/|[A-Za-z0-9_.\-]")
# The same for percent-encoding (`%73%6B-...`, or only the odd character encoded).
_PERCENT_RUN: Final = re.compile(
    r"(?<![A-Za-z0-9_.~\-%])[A-Za-z0-9_.~\-]*+(?:%[0-9A-Fa-f]{2}[A-Za-z0-9_.~\-]*+)+"
)
_PERCENT_UNIT: Final = re.compile(r"%([0-9A-Fa-f]{2})|[A-Za-z0-9_.~\-]")
_URLSAFE_TO_STANDARD: Final = str.maketrans("-_", "+/")
_STANDARD_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_URLSAFE_TO_STANDARD_BYTES: Final = bytes.maketrans(b"-_", b"+/")
_BASE64_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
_BASE64_RUNS: Final = bytes(ord("a") if b in _BASE64_CHARS else ord("\n") for b in range(256))
"""Every base64 character (of either alphabet) to `a`, any other byte to a newline: a run of
base64 in a text becomes a run of `a` as long."""
_BASE64_ALIGNMENTS: Final = ((b"", 0), (b"\0", 2), (b"\0\0", 3))
"""To encode a key at each alignment of a 3-byte base64 group: the zero bytes put before it,
and the characters of the encoding that hold their bits (skipped)."""


def mask_key(key: str) -> str:
    """Mask a key or token for display.

    The first 4 characters, `...`, and the last 4 (`sk-a...9f3k`); keys of 12
    characters or fewer become `***` because showing 8 of them would reveal too much.
    """
    if len(key) <= SHORT_KEY:
        return "***"
    return f"{key[:4]}...{key[-4:]}"


def same_length_mask(key: str) -> str:
    """A mask as long as `key` (`sk-a*****...*9f3k`), for bodies whose length is already announced."""
    if len(key) <= SHORT_KEY:
        return "*" * len(key)
    return f"{key[:4]}{'*' * (len(key) - 8)}{key[-4:]}"


@dataclass(frozen=True, slots=True)
class _SecretIndex:
    """The secrets of a masker, arranged for fast search (immutable, swapped whole).

    API keys and most tokens are made of `[A-Za-z0-9_.-]`: those are found by
    scanning the text's runs of such characters and looking them up in a set,
    which costs the same for 10 keys or 100,000. Any other secret goes into one
    regex alternation (few: hand-written tokens). Encoded forms are decoded
    back into text and searched the same way, so their cost does not grow
    with the number of keys either.

    The plain secrets are spread over `SECRET_SHARDS` small sets by hash. An
    index is built on a thread, but copying or building one set of 100,000
    strings is a single C call that holds the GIL, and the event loop with
    it: 7 ms at 100,000 keys, 19 ms at 200,000, measured beside a serving
    gateway. Built shard by shard, the loop gets the GIL back between shards.
    """

    plain: tuple[frozenset[str], ...]
    """The plain secrets, shard `hash(secret) & _SHARD_MASK` of each in its set."""
    count: int
    """How many secrets in all (plain and others)."""
    others: frozenset[str]
    """The secrets that are not plain (few: hand-written tokens); a mask is made when one is found."""
    lengths: tuple[int, ...]
    runs: re.Pattern[str] | None
    other: re.Pattern[str] | None
    encoded: re.Pattern[str] | None
    """Runs of base64 characters long enough to hold the encoding of a plain secret."""

    @classmethod
    def of(cls, secrets: Iterable[str], base: _SecretIndex | None = None) -> _SecretIndex:
        """The index of `secrets`, and of `base`'s secrets when given.

        `base`'s shards are copied shard by shard (fast copies), not sorted
        through again: adding 1,000 keys to 100,000 costs little more than the 1,000.
        """
        buckets: list[set[str]] = [set() for _ in range(SECRET_SHARDS)]
        new_others: set[str] = set()
        found_lengths: set[int] = set()
        for secret in secrets:  # a Python loop: the GIL can change hands as it goes
            if _PLAIN_SECRET.fullmatch(secret):
                buckets[hash(secret) & _SHARD_MASK].add(secret)
                found_lengths.add(len(secret))
            else:
                new_others.add(secret)
        if base is None:
            plain = tuple(frozenset(bucket) for bucket in buckets)
            others = frozenset(new_others)
        else:
            plain = tuple(
                shard | bucket if bucket else shard
                for shard, bucket in zip(base.plain, buckets, strict=True)
            )
            others = base.others | new_others
            found_lengths.update(base.lengths)
        other = sorted(others, key=len, reverse=True)
        lengths = tuple(sorted(found_lengths, reverse=True))
        encodable = [n for n in lengths if n >= ENCODED_MIN]
        encoded = None
        if encodable:
            shortest = -(-4 * encodable[-1] // 3)  # base64 of the shortest secret, unpadded
            encoded = re.compile(f"(?<![A-Za-z0-9+/_\\-])[A-Za-z0-9+/_\\-]{{{shortest},}}+={{0,2}}")
        return cls(
            plain=plain,
            count=sum(map(len, plain)) + len(others),
            others=frozenset(other),
            lengths=lengths,
            runs=re.compile(f"[{_TOKEN_CHARS}]{{{lengths[-1]},}}") if lengths else None,
            other=re.compile("|".join(re.escape(s) for s in other)) if other else None,
            encoded=encoded,
        )

    @property
    def empty(self) -> bool:
        """No secret at all (nothing to mask)."""
        return not self.count

    def knows(self, secret: str) -> bool:
        """Whether `secret` is one of the index's secrets."""
        return secret in self.plain[hash(secret) & _SHARD_MASK] or secret in self.others

    # -- raw --------------------------------------------------------------------------------

    def mask_text(self, text: str) -> str:
        if self.other is not None:
            text = self.other.sub(lambda m: mask_key(m.group()), text)
        if self.runs is None:
            return text
        text = self.runs.sub(self._mask_run, text)
        if "\\" in text:
            text = _JSON_RUN.sub(self._mask_json_run, text)
        if "%" in text:
            text = _PERCENT_RUN.sub(self._mask_percent_run, text)
        if self.encoded is not None:
            text = self.encoded.sub(self._mask_base64_run, text)
        return text

    def _mask_run(self, match: re.Match[str]) -> str:
        run = match.group()
        if run in self.plain[hash(run) & _SHARD_MASK]:
            return mask_key(run)
        found = self._find(run)
        if not found:
            return run
        parts: list[str] = []
        start = 0
        for begin, end in found:
            parts += (run[start:begin], mask_key(run[begin:end]))
            start = end
        parts.append(run[start:])
        return "".join(parts)

    def _find(self, run: str) -> list[tuple[int, int]]:
        """(start, end) of each secret inside a longer run (`xsk-…`): longest match first."""
        found: list[tuple[int, int]] = []
        plain, shard = self.plain, _SHARD_MASK
        position = 0
        shortest = self.lengths[-1]
        size = len(run)
        while position <= size - shortest:
            for length in self.lengths:
                candidate = run[position : position + length]
                if len(candidate) == length and candidate in plain[hash(candidate) & shard]:
                    found.append((position, position + length))
                    position += length
                    break
            else:
                position += 1
        return found

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every plain secret in `text`."""
        spans: list[tuple[int, int]] = []
        if self.runs is None:
            return spans
        for match in self.runs.finditer(text):
            base, run = match.start(), match.group()
            if run in self.plain[hash(run) & _SHARD_MASK]:
                spans.append((base, base + len(run)))
            else:
                spans.extend((base + b, base + e) for b, e in self._find(run))
        return spans

    # -- escaped: one unit of the text decodes to one character -----------------------------

    def _mask_units(self, units: list[str], decoded: str) -> str | None:
        """The units with every secret of `decoded` replaced by its mask; None if none."""
        spans = self._spans(decoded)
        if not spans:
            return None
        parts: list[str] = []
        start = 0
        for begin, end in spans:
            parts.extend(units[start:begin])
            parts.append(mask_key(decoded[begin:end]))
            start = end
        parts.extend(units[start:])
        return "".join(parts)

    def _mask_json_run(self, match: re.Match[str]) -> str:
        units: list[str] = []
        chars: list[str] = []
        for unit in _JSON_UNIT.finditer(match.group()):
            units.append(unit.group())
            code = unit.group(1)
            chars.append(chr(int(code, 16)) if code else unit.group()[-1])
        return self._mask_units(units, "".join(chars)) or match.group()

    def _mask_percent_run(self, match: re.Match[str]) -> str:
        units: list[str] = []
        chars: list[str] = []
        for unit in _PERCENT_UNIT.finditer(match.group()):
            units.append(unit.group())
            code = unit.group(1)
            chars.append(chr(int(code, 16)) if code else unit.group())
        return self._mask_units(units, "".join(chars)) or match.group()

    # -- base64: decode the run, mask the plain text, encode it again -----------------------

    def _mask_base64_run(self, match: re.Match[str]) -> str:
        run = match.group()
        body = run.rstrip("=")
        urlsafe = "-" in body or "_" in body
        standard = body.translate(_URLSAFE_TO_STANDARD) if urlsafe else body
        if len(standard) % 4 == 1:
            standard = standard[:-1]  # a stray character: not a whole encoding
        try:
            decoded = binascii.a2b_base64(standard + "=" * (-len(standard) % 4))
        except binascii.Error:
            return run
        plain = decoded.decode("latin-1")
        spans = self._spans(plain)
        if not spans:
            return run
        parts: list[str] = []
        start = 0
        for begin, end in spans:
            parts += (plain[start:begin], mask_key(plain[begin:end]))
            start = end
        parts.append(plain[start:])
        encoded = binascii.b2a_base64("".join(parts).encode("latin-1"), newline=False)
        if urlsafe:
            encoded = encoded.translate(_STANDARD_TO_URLSAFE)
        if len(body) == len(run):
            encoded = encoded.rstrip(b"=")
        return encoded.decode("ascii")


_EMPTY_INDEX: Final = _SecretIndex.of(())


def _with_added(
    base: _SecretIndex, secrets: Iterable[str]
) -> tuple[list[str], _SecretIndex | None]:
    """`secrets` as a list, and the index of `base` plus those it lacks (None: it lacks none)."""
    wanted = [s for s in secrets if s]
    added = [s for s in wanted if not base.knows(s)]
    return wanted, (_SecretIndex.of(added, base) if added else None)


@final
class Masker:
    """Every secret of the process, and the one function that masks them in any text.

    Secrets are added as they become known (configuration tokens at start,
    keys when read from key files or the store, a key at the latest when it
    is about to be sent upstream). The index is rebuilt off to the side and
    swapped in with one assignment, so a concurrent reader sees the old or the
    new set, never a broken one.
    """

    __slots__ = ("_index",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._index = _EMPTY_INDEX
        self.add(secrets)

    def __len__(self) -> int:
        return self._index.count

    def __contains__(self, secret: object) -> bool:
        return isinstance(secret, str) and self._index.knows(secret)

    def add(self, secrets: Iterable[str]) -> None:
        """Add `secrets` to the masked set (empty strings are ignored)."""
        _, index = _with_added(self._index, secrets)
        if index is not None:
            self._index = index

    async def add_off_loop(self, secrets: Iterable[str]) -> None:
        """`add`, done on a thread: with 100,000 secrets it takes a while.

        `secrets` is read and the new index built on the thread; the event
        loop only swaps the index in. Should another `add` have swapped one
        in meanwhile, the build is done again over it, so no secret is ever
        dropped. Returns once every secret of `secrets` is masked.
        """
        wanted: Iterable[str] = secrets
        while True:
            base = self._index
            wanted, index = await asyncio.to_thread(_with_added, base, wanted)
            if index is None:
                return
            if self._index is base:
                self._index = index
                return

    def remember(self, secret: str) -> None:
        """Add one secret; a dictionary look-up when it is already known (the request path)."""
        if secret and not self._index.knows(secret):
            self.add((secret,))

    def mask_text(self, text: str) -> str:
        """`text` with every known secret, in any of its forms, replaced by its mask."""
        index = self._index
        if index.empty or not text:
            return text
        return index.mask_text(text)

    def mask_bytes(self, data: bytes) -> bytes:
        """`mask_text` for bytes; bytes that are not ASCII pass through unchanged."""
        index = self._index
        if index.empty or not data:
            return data
        text = data.decode("latin-1")
        masked = index.mask_text(text)
        return data if masked == text else masked.encode("latin-1")


_KEY_BYTES: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
"""The bytes of a plain key (shared by every KeyPattern of such a key)."""


@final
class KeyPattern:
    """One key's forms, prepared for the requests made with it.

    For the request path: `appears_in` tells cheaply (substring searches in C)
    whether a text holds the key raw, fully JSON-escaped, fully
    percent-encoded or in base64 (standard or URL-safe, alone or inside a
    longer encoded text, at any of the three byte alignments); `whole` masks
    the raw key in a body, keeping its length (`same_length_mask`), so a
    Content-Length already announced stays true; `split` does the same for a
    stream chunk and holds back an end that could be the beginning of the key.
    Making one costs an encode: the base64 forms are made only when a text
    holds a run of base64 long enough to be one (a header value that is a
    token or a cookie, not a date or a request id), the bytes a key may hold
    on the first look at a stream; so a request with a key not seen before
    costs about what one with a known key does, whatever the size of the pool.
    """

    __slots__ = ("key", "raw", "_run", "_chars", "_base64")

    def __init__(self, key: str) -> None:
        self.key = key
        raw = self.raw = key.encode()
        """The key's bytes."""
        self._run = b"a" * max(1, 4 * (len(raw) // 3) - 3)
        """As many `a` as the shortest base64 form of the key has characters, or fewer."""
        self._chars: frozenset[int] | None = None
        self._base64: tuple[bytes, ...] | None = None

    @property
    def chars(self) -> frozenset[int]:
        """Bytes the key may hold: a chunk ending in any other cannot end in a part of it."""
        chars = self._chars
        if chars is None:
            raw = self.raw
            chars = self._chars = _KEY_BYTES if _KEY_BYTES.issuperset(raw) else frozenset(raw)
        return chars

    def base64_forms(self) -> tuple[bytes, ...]:
        """The key in standard base64 at each of the three byte alignments (its full groups)."""
        forms = self._base64
        if forms is None:
            raw, size = self.raw, len(self.raw)
            made = []
            for lead, skip in _BASE64_ALIGNMENTS:
                core = binascii.b2a_base64(lead + raw, newline=False)[
                    skip : 4 * ((len(lead) + size) // 3)
                ]
                if len(core) >= 4:
                    made.append(core)
            forms = self._base64 = tuple(made)
        return forms

    def appears_in(self, text: str) -> bool:
        """True when `text` holds the key in any of its forms (raw, escaped, encoded).

        It may say True for a text that only resembles an encoded form (the
        URL-safe and standard alphabets are folded together): the caller then
        runs the whole masker, which decides.
        """
        if self.key in text:
            return True
        data = text.encode("utf-8", "surrogatepass")
        # Only a run of base64 as long as the key's shortest form can hold one (most header
        # values are far shorter): the forms are made and searched for only then.
        if data.translate(_BASE64_RUNS).find(self._run) != -1:
            standard = data.translate(_URLSAFE_TO_STANDARD_BYTES)
            for form in self.base64_forms():
                if standard.find(form) != -1:
                    return True
        raw = self.raw
        if "\\u" in text:  # JSON escapes: \u0073\u006b..., lower- or upper-case hex
            pairs = raw.hex("|")
            for digits in (pairs, pairs.upper()):
                if "\\u00" + digits.replace("|", "\\u00") in text:
                    return True
        if "%" in text:  # %73%6B..., upper- or lower-case hex
            for digits in (raw.hex("%").upper(), raw.hex("%")):
                if "%" + digits in text:
                    return True
        return False

    def whole(self, data: bytes) -> bytes:
        """A whole body with the raw key masked."""
        raw = self.raw
        # bytes.find, not `in`: `in` first tries the needle as an int and pays for the error.
        if not raw or data.find(raw) == -1:
            return data
        return data.replace(raw, same_length_mask(self.key).encode())

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """(what can be sent now with the key masked, the end held back until more arrives)."""
        raw = self.raw
        if not raw or not data:
            return data, b""
        if data.find(raw) != -1:
            data = data.replace(raw, same_length_mask(self.key).encode())
        if data[-1] in self.chars:
            size = len(data)
            first = raw[:1]
            position = data.find(first, max(0, size - len(raw) + 1))
            while position != -1:
                if raw.startswith(data[position:]):
                    return data[:position], data[position:]
                position = data.find(first, position + 1)
        return data, b""
