"""Key files: reading an instance's keys from `keys_path` and its inline `keys`.

Key files are the source of truth for an instance's keys: `*.txt` files, one
key per line. A folder or file that cannot be read is an error naming the
path, never a crash, and never a reason to delete the keys already stored.
`llmgateway.keeper.key_sync` brings what is read here into store, masker and pool.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from llmgateway.config.schemas import ProviderConfig
from llmgateway.store.key_admin import INLINE_SOURCE

log = structlog.get_logger(__name__)

KEY_FILE_PATTERN = "*.txt"
"""The files of `keys_path` that hold keys."""


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

    @property
    def ok(self) -> bool:
        """True when every file could be read."""
        return not self.errors


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
        files = sorted(p for p in path.glob(KEY_FILE_PATTERN) if not p.is_dir())
    except OSError as exc:
        return KeyFileRead((), (f"cannot list keys folder {path}: {exc.strerror or exc}",))
    keys: list[str] = []
    errors: list[str] = []
    found: dict[str, str] = {}
    for file in files:
        try:
            text = file.read_text(encoding="utf-8-sig")
        except OSError as exc:
            errors.append(f"cannot read key file {file}: {exc.strerror or exc}")
            continue
        except UnicodeDecodeError:
            errors.append(f"cannot read key file {file}: not UTF-8 text")
            continue
        lines = parse_key_lines(text.splitlines())
        keys.extend(lines)
        for key in lines:
            found.setdefault(key, file.name)
    return KeyFileRead(tuple(dict.fromkeys(keys)), tuple(errors), files=found)


def resolve_keys_path(keys_path: str, cwd: Path | None = None) -> Path:
    """`keys_path` as an absolute path, a relative one taken from `cwd` (default: the working dir)."""
    path = Path(keys_path).expanduser()
    return path if path.is_absolute() else (cwd or Path.cwd()) / path


async def load_keys(provider: ProviderConfig, cwd: Path | None = None) -> KeyFileRead:
    """The keys of `provider`: its `keys_path` files (read off the event loop), then inline `keys`.

    An empty `keys_path` means inline keys only. Keys are unique, first seen first.
    """
    return await asyncio.to_thread(_read_provider_keys, provider, cwd)


def _read_provider_keys(provider: ProviderConfig, cwd: Path | None) -> KeyFileRead:
    """`load_keys`'s work, on a thread: 100,000 keys take a while to read, merge and name."""
    from_files = KeyFileRead(())
    if provider.keys_path:
        from_files = read_key_files(resolve_keys_path(provider.keys_path, cwd))
    inline = parse_key_lines(provider.keys)
    keys = tuple(dict.fromkeys((*from_files.keys, *inline)))
    paths: dict[str, str] = {}  # file name -> its path as configured, built once per file
    files: dict[str, str] = {}
    for key, name in from_files.files.items():
        path = paths.get(name)
        if path is None:
            path = paths[name] = str(Path(provider.keys_path) / name)
        files[key] = path
    for key in inline:
        files.setdefault(key, INLINE_SOURCE)
    digest = hash((keys, tuple(files.items())))
    return KeyFileRead(keys, from_files.errors, from_files.missing, files, digest)


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
