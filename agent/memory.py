"""Keeping the agent's resident memory flat under load (glibc allocator settings)."""
from __future__ import annotations

import ctypes
import sys
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


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def allocator_stats() -> dict[str, int]:
    """glibc's view of the heap (mallinfo2): bytes in use, free but kept (fragmentation), and in big mmapped
    blocks; and Arrow's pool when the recorder has loaded it. Empty where not glibc."""
    out: dict[str, int] = {}
    libc = _libc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is not None:
        fn.restype = _MallInfo2
        info = fn()
        out.update(heap_bytes=info.arena, heap_in_use_bytes=info.uordblks, heap_free_bytes=info.fordblks,
                   mmapped_bytes=info.hblkhd)
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        pool = arrow.default_memory_pool()
        out.update(arrow_bytes=pool.bytes_allocated(), arrow_max_bytes=pool.max_memory())
    return out
