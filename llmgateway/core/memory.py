"""Memory of a large pool: free pages given back after loading, no collector pauses over it.

Loading 100,000 keys goes through short-lived buffers (key files, pages of
rows, the store's statements) that the C allocator keeps for reuse once they
are freed; the process's resident size stays at its high-water mark. glibc's
`malloc_trim` returns those free pages. Elsewhere (another C library) this
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, Final, cast


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


M_MMAP_THRESHOLD: Final = -3
"""glibc's `mallopt` parameter: the size from which a block gets a mapping of its own."""

MMAP_THRESHOLD: Final = 1 << 20
"""Bytes from which a block is mapped on its own, and unmapped when freed (`bound_allocator`)."""


def bound_allocator() -> bool:
    """Keep blocks of `MMAP_THRESHOLD` bytes and more in their own mappings; True when set.

    glibc raises the size from which it maps a block on its own (up to 32
    MiB) each time such a block is freed, and with it the free space it keeps
    at the top of a heap (up to 64 MiB). Blocks made by the threads that read
    key files and decode rows then come from the threads' heaps, whose top
    `malloc_trim` never gives back: after a start-up sync of 100,000 keys the
    process kept 40 MB more than after a warm start, for good. A fixed
    threshold turns that adjustment off: a large block is unmapped when it is
    freed, and every heap gives back free space at its top past 128 KiB.
    Elsewhere (another C library) this does nothing.
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def _gc_untrack() -> Callable[[object], None] | None:
    """CPython's `PyObject_GC_UnTrack`, or None where the C API cannot be reached."""
    try:
        function = ctypes.pythonapi.PyObject_GC_UnTrack
    except (AttributeError, OSError):  # pragma: no cover - not CPython
        return None
    function.argtypes = (ctypes.py_object,)
    function.restype = None
    return cast(Callable[[object], None], function)


_UNTRACK: Final = _gc_untrack()


def untrack(value: object) -> None:
    """Take `value` out of the cyclic garbage collector's lists (reference counting still frees it).

    For the pool's records: 200,000 of them, replaced one by one as the
    keeper and the requests report, fill the collector's oldest generation,
    and each full collection then walks them all (50 ms, the event loop held
    throughout). A record is an immutable value whose fields are numbers,
    strings, times or enum members: nothing it refers to can refer back to
    it, so it can never be part of a reference cycle, and the collector has
    nothing to find there. Nothing else may be passed here.
    """
    if _UNTRACK is not None:
        _UNTRACK(value)


RELEASE_SLICE: Final = 2000
"""Items `release` frees by one call into C."""


def release(items: list[Any]) -> None:
    """Empty `items` from the end, `RELEASE_SLICE` items at a time (blocking: for a thread).

    Freeing a list of 100,000 rows is one call into C that holds the GIL, and
    so the event loop's thread, for tens of milliseconds; a slice at a time,
    the interpreter can switch threads in between.
    """
    while items:
        del items[-RELEASE_SLICE:]


class _Bulk:
    """How many `bulk_load` bodies are running now."""

    depth = 0


@contextmanager
def bulk_load(*, collect_first: bool = False) -> Iterator[None]:
    """Hold the cyclic garbage collector off while a pool is loaded; then freeze what lives.

    A full collection walks every tracked object: with 200,000 records in the
    pool it holds the event loop 100 ms and more, and loading as many again
    (a reconciliation, a key sync) is what triggers one. So while the body
    runs the collector is off, and afterwards every object alive is moved to
    the permanent generation (`gc.freeze`), which later collections skip:
    the pool's records are freed by reference counting when replaced, never
    collected. `collect_first` (start-up, before serving) collects once
    before, so no earlier garbage is frozen. Bodies may overlap (a
    reconciliation during a key sync): the collector comes back on when the
    last one ends.
    """
    if collect_first:
        gc.collect()
    _Bulk.depth += 1
    gc.disable()
    try:
        yield
    finally:
        _Bulk.depth -= 1
        if _Bulk.depth == 0:
            gc.freeze()
            gc.enable()


def freezing() -> bool:
    """True inside a `bulk_load` body: what is alive at its end is frozen, out of every collection.

    An object made there and kept needs no `untrack`: the freeze takes it
    out of the collector's walk as well, at no cost per object.
    """
    return _Bulk.depth > 0
