"""Key files: reading an instance's keys from `keys_path` and its inline `keys`.

Key files are the source of truth for an instance's keys: `*.txt` files, one
key per line. A folder or file that cannot be read is an error naming the
path, never a crash, and never a reason to delete the keys already stored.
`llmgateway.keeper.key_sync` brings what is read here into store, masker and pool.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from llmgateway.config.schemas import ProviderConfig
from llmgateway.store.key_admin import INLINE_SOURCE

log = structlog.get_logger(__name__)

KEY_FILE_PATTERN = "*.txt"
"""The files of `keys_path` that hold keys."""


READ_BLOCK: Final = 1 << 18
"""Characters of a key file decoded and split into lines at a time.

Reading runs on a thread, but one call into C (decoding, splitting) holds the GIL
throughout, and the event loop's thread waits for it: a block of this size takes
well under a millisecond, where a whole file of 100,000 keys took over ten."""

STEP: Final = 2000
"""Keys hashed by one call into C when the digest of a read is made (see READ_BLOCK)."""

SETTLE_NS: Final = 2_000_000_000
"""How long before a read a file must have last changed for the read to be reused.

A file changed within the file system's timestamp granularity of the read could
change again, size and times unchanged, after it: such a read is never reused,
and the next sync reads the files again (the check git makes of "racily clean"
files)."""

_LINE_BREAKS: Final = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
"""The characters `str.splitlines` ends a line at."""

type FileState = tuple[str, int, int, int, int]
"""A key file as found: name, size, modification and change times (ns), inode."""


@dataclass(frozen=True, slots=True)
class KeyFileRead:
    """The keys read for an instance, and every problem met while reading them.

    `keys` are unique, in first-seen order. When `errors` is not empty the
    keys are incomplete and must not replace the stored ones. `missing` says
    the keys folder does not exist (its keys, if any, are unknown).
    """

    keys: tuple[str, ...]
    errors: tuple[str, ...] = ()
    missing: bool = False
    files: Mapping[str, str] = field(default_factory=dict, compare=False)
    """The file each key was first found in: its name in the folder (`read_key_files`), or
    the path as configured, `keys_path` joined with it, or `inline` (`load_keys`)."""
    digest: int = field(default=0, compare=False)
    """A hash of `keys` and `files` (`load_keys`): equal digests, the same keys in the same files."""
    source: Hashable | None = field(default=None, compare=False)
    """What was read, as it stood (`load_keys`): the keys path and inline keys, and each key
    file's `FileState`. A later `load_keys` finding the same returns this read without
    reading anything. None: never reused (a file changed just before, or an error)."""

    @property
    def ok(self) -> bool:
        """True when every file could be read."""
        return not self.errors

    def without_keys(self) -> KeyFileRead:
        """This read's `source` and `digest` only: what `load_keys` needs to tell it is unchanged.

        Kept between two syncs instead of the read itself (100,000 keys and their files).
        """
        return KeyFileRead((), self.errors, self.missing, {}, self.digest, self.source)


def parse_key_lines(lines: Iterable[str]) -> list[str]:
    """The keys of a key file's lines, in order (repeats kept).

    Whitespace is trimmed; blank lines and lines starting with `#` are
    skipped; a `#` after whitespace starts a trailing comment (keys hold no
    whitespace, so `sk-abc  # team A` is the key `sk-abc`).
    """
    keys: list[str] = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        for mark in (" #", "\t#"):
            cut = text.find(mark)
            if cut != -1:
                text = text[:cut].rstrip()
        keys.append(sys.intern(text))  # one copy shared with the store's records and the masker
    return keys


def _read_key_file(file: Path) -> list[str]:
    """The keys of one file (`parse_key_lines`), read `READ_BLOCK` characters at a time.

    Raises OSError or UnicodeDecodeError (a UTF-8 byte-order mark is skipped).
    """
    keys: list[str] = []
    carry = ""
    with file.open(encoding="utf-8-sig", newline="") as handle:
        while block := handle.read(READ_BLOCK):
            lines = (carry + block).splitlines(keepends=True)
            carry = lines.pop() if lines[-1][-1] not in _LINE_BREAKS else ""
            keys.extend(parse_key_lines(lines))
    if carry:
        keys.extend(parse_key_lines((carry,)))
    return keys


def _key_files(path: Path) -> list[Path]:
    """The `*.txt` files of the folder `path`, sorted by name (OSError when it cannot be listed)."""
    return sorted(p for p in path.glob(KEY_FILE_PATTERN) if not p.is_dir())


def read_key_files(path: Path) -> KeyFileRead:
    """Read every `*.txt` file of the folder `path`, in sorted file-name order (blocking).

    Keys are trimmed and de-duplicated keeping the first occurrence. A
    missing folder, a folder that cannot be listed, or a file that cannot be
    read or decoded as UTF-8 adds an error naming the path; the other files
    are still read.
    """
    if not path.exists():
        return KeyFileRead((), (f"keys folder {path} does not exist",), missing=True)
    if not path.is_dir():
        return KeyFileRead((), (f"keys path {path} is not a folder",))
    try:
        files = _key_files(path)
    except OSError as exc:
        return KeyFileRead((), (f"cannot list keys folder {path}: {exc.strerror or exc}",))
    errors: list[str] = []
    found: dict[str, str] = {}  # key -> the file it was first found in, in first-seen order
    for file in files:
        try:
            keys = _read_key_file(file)
        except OSError as exc:
            errors.append(f"cannot read key file {file}: {exc.strerror or exc}")
            continue
        except UnicodeDecodeError:
            errors.append(f"cannot read key file {file}: not UTF-8 text")
            continue
        name = file.name
        for key in keys:
            found.setdefault(key, name)
    return KeyFileRead(tuple(found), tuple(errors), files=found)


def resolve_keys_path(keys_path: str, cwd: Path | None = None) -> Path:
    """`keys_path` as an absolute path, a relative one taken from `cwd` (default: the working dir)."""
    path = Path(keys_path).expanduser()
    return path if path.is_absolute() else (cwd or Path.cwd()) / path


async def load_keys(
    provider: ProviderConfig, cwd: Path | None = None, previous: KeyFileRead | None = None
) -> KeyFileRead:
    """The keys of `provider`: its `keys_path` files (read off the event loop), then inline `keys`.

    An empty `keys_path` means inline keys only. Keys are unique, first seen
    first. `previous` (this instance's last read) is returned as it is when
    the files are found as they were then (the same names, sizes, times and
    inodes) and settled (see `SETTLE_NS`): a periodic re-read of 100,000
    unchanged keys reads nothing.
    """
    return await asyncio.to_thread(_read_provider_keys, provider, cwd, previous)


def _file_states(folder: Path) -> tuple[FileState, ...] | None:
    """The `FileState` of every key file of `folder`; None when one cannot be listed or statted."""
    try:
        states = []
        for file in _key_files(folder):
            stat = file.stat()
            states.append(
                (file.name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
            )
    except OSError:
        return None
    return tuple(states)


def _read_provider_keys(
    provider: ProviderConfig, cwd: Path | None, previous: KeyFileRead | None
) -> KeyFileRead:
    """`load_keys`'s work, on a thread: 100,000 keys take a while to read, merge and name.

    Large lists are only handled in Python loops or in C calls over small
    slices (see READ_BLOCK): the event loop's thread gets the GIL back within
    the interpreter's switch interval.
    """
    started_ns = time.time_ns()
    folder = resolve_keys_path(provider.keys_path, cwd) if provider.keys_path else None
    states = _file_states(folder) if folder is not None and folder.is_dir() else None
    source: Hashable | None = None
    if folder is None or states is not None:
        source = (provider.keys_path, str(folder), provider.keys, states)
        if previous is not None and previous.source == source:
            return previous
    from_files = KeyFileRead(())
    if folder is not None:
        from_files = read_key_files(folder)
    paths: dict[str, str] = {}  # file name -> its path as configured, built once per file
    files: dict[str, str] = {}  # every key -> its file, files first, in first-seen order
    for key, name in from_files.files.items():
        path = paths.get(name)
        if path is None:
            path = paths[name] = str(Path(provider.keys_path) / name)
        files[key] = path
    for key in parse_key_lines(provider.keys):
        files.setdefault(key, INLINE_SOURCE)
    keys = tuple(files)
    settled = all(max(state[2], state[3]) < started_ns - SETTLE_NS for state in states or ())
    reusable = from_files.ok and settled
    return KeyFileRead(
        keys,
        from_files.errors,
        from_files.missing,
        files,
        _digest(keys, files),
        source if reusable else None,
    )


def _digest(keys: tuple[str, ...], files: Mapping[str, str]) -> int:
    """A hash of `keys` and the file of each, made `STEP` keys at a time."""
    value = 0
    for start in range(0, len(keys), STEP):
        chunk = keys[start : start + STEP]
        value = hash((value, chunk, tuple([files[key] for key in chunk])))
    return value


def warn_if_keyless(provider: ProviderConfig, total: int, cwd: Path | None = None) -> None:
    """Log, for an instance without any key, where its keys go (a first-time user's question)."""
    if total:
        return
    folder = resolve_keys_path(provider.keys_path, cwd) if provider.keys_path else None
    log.warning(
        "instance_has_no_keys",
        instance=provider.name,
        keys_folder=str(folder) if folder is not None else None,
        hint=(
            f"put *.txt files with one key per line in {folder}, "
            if folder is not None
            else "set keys_path to a folder of *.txt key files, "
        )
        + f"or list keys inline under providers.{provider.name}.keys",
    )
