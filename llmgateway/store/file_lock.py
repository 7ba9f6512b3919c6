"""Named locks between the processes of one host: an `flock` on a file beside the database.

The kernel frees an `flock` when its holder dies, so a crashed process never
leaves a lock behind.
"""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Final

from llmgateway.core.errors import StoreError

LOCK_POLL_INTERVAL: Final = 0.05
"""Seconds between two attempts at a named lock another process holds (`wait=True`)."""


@asynccontextmanager
async def file_lock(path: Path, name: str, *, wait: bool = False) -> AsyncIterator[bool]:
    """Hold an exclusive `flock` on `path` (created if missing), the lock `name`, for the body.

    Yields True when this process got it, False when another holds it; with
    `wait`, waits for it. Raises StoreError when the lock cannot be taken.
    """
    try:
        handle = await asyncio.to_thread(_open_lock_file, path)
    except OSError as exc:
        raise _failed(name, exc) from exc
    try:
        try:
            got = _try_flock(handle)
            # Polled, not a blocking flock on a thread: a cancelled wait ends at once.
            while wait and not got:
                await asyncio.sleep(LOCK_POLL_INTERVAL)
                got = _try_flock(handle)
        except OSError as exc:
            raise _failed(name, exc) from exc
        yield got
    finally:
        handle.close()  # closing the file releases the lock


def _failed(name: str, exc: OSError) -> StoreError:
    return StoreError(f"sqlite: taking lock {name} failed: {type(exc).__name__}: {exc}")


def _open_lock_file(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a+b")


def _try_flock(handle: IO[bytes]) -> bool:
    """Lock `handle` exclusively if nobody holds it (never blocks); True when locked."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
