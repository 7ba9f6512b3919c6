"""Giving memory back: what a start-up that read a whole pool leaves free, returned to the system.

Loading 100,000 keys goes through short-lived buffers (key files, pages of
rows, the store's statements) that the C allocator keeps for reuse once they
are freed; the process's resident size stays at its high-water mark. glibc's
`malloc_trim` returns those free pages. Elsewhere (another C library) this
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_free_memory() -> bool:
    """Return the C allocator's free pages to the system; True when it could be asked."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
