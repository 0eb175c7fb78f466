"""Keeping the agent's resident memory flat under load (glibc allocator settings)."""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): its allocator returns memory on its own
        return None


def tune_allocator() -> None:
    """Call before starting threads. Probe polls allocate multi-MB buffers (batch map reads) every interval; with
    glibc's default sliding mmap threshold those land in the heap and fragment it, and every thread gets its own
    64 MB arena. A fixed threshold returns big buffers to the kernel at free; two arenas bound the rest."""
    libc = _libc()
    if libc is None:
        return
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    libc.mallopt(M_ARENA_MAX, 2)


def trim() -> None:
    """Return freed heap pages to the kernel."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
