"""Draining the kernel's rings of time bins (net_tc.c) without gaps and without double counting.

The bins live in one BPF array mapped into this process (BPF_F_MMAPABLE), viewed as [ring, lane, bin] slots of
(idx, bytes, packets). Kernel writers only add to a slot and stamp it with its absolute bin number; this reader
alone clears slots, and only slots whose bin is complete. Each ring has a cursor, the first bin not yet drained;
a drain takes every bin from the cursor up to the last complete bin (minus a guard for writers that read the clock
just before a bin ended), so consecutive drains tile time exactly.

What a slot can hold when its bin number k is drained, per lane:
  idx == k               the bin's own counts (if OVERRUN_FLAG is set too, counts from an older undrained lap
                         were added on top: counted, and the bin is reported as mixed)
  idx == 0               no traffic on this lane in bin k
  idx < k  (nonzero)     a late write for a bin drained earlier: real bytes, added to the totals, not to a bin
  idx > k                a newer lap already wrote here: the reader fell more than a ring behind; bin k's counts
                         were merged into that newer bin (so totals stay exact) and bin k is reported as lost.
                         Such a slot is left alone: it is drained when its own bin comes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SLOT_DTYPE = np.dtype([("idx", "<u8"), ("bytes", "<u8"), ("packets", "<u8")])
OVERRUN_FLAG = np.uint64(1 << 63)
_IDX_MASK = np.uint64((1 << 63) - 1)


@dataclass(slots=True)
class Drained:
    """One ring's bins [first_bin, first_bin + len(bytes)), lanes summed, plus what did not fit a bin."""

    first_bin: int
    bytes: np.ndarray  # int64 per bin
    packets: np.ndarray
    late_bytes: int = 0
    late_packets: int = 0
    lost_bins: int = 0
    mixed_bins: int = 0

    @property
    def total_bytes(self) -> int:
        return int(self.bytes.sum()) + self.late_bytes

    @property
    def total_packets(self) -> int:
        return int(self.packets.sum()) + self.late_packets


class BinRings:
    """Cursor-based reader over slots shaped [nrings, nlanes, nbins] (a view of the mmapped BPF array)."""

    def __init__(self, slots: np.ndarray, bin_ns: int, guard_ns: int) -> None:
        assert slots.dtype == SLOT_DTYPE and slots.ndim == 3, "slots must be [ring, lane, bin] of SLOT_DTYPE"
        self.slots = slots
        self.bin_ns = bin_ns
        self.guard_ns = guard_ns
        self.nbins = slots.shape[2]
        self.cursors = [0] * slots.shape[0]

    def start(self, now_ns: int) -> None:
        """Begin every ring at the bin containing `now_ns` (earlier bins were never written)."""
        self.cursors = [now_ns // self.bin_ns] * len(self.cursors)

    def complete_until(self, now_ns: int) -> int:
        """The first bin that is not yet safe to drain at `now_ns`."""
        return max(0, (now_ns - self.guard_ns) // self.bin_ns)

    def drain(self, ring: int, now_ns: int) -> Drained:
        """Take (and clear) every complete bin of `ring` since the previous drain."""
        start, end = self.cursors[ring], self.complete_until(now_ns)
        if end <= start:
            empty = np.zeros(0, dtype=np.int64)
            return Drained(start, empty, empty.copy())
        lost = 0
        if end - start > self.nbins:  # only the last ring's worth can still be in the slots
            lost = end - self.nbins - start
            start = end - self.nbins
        ks = np.arange(start, end, dtype=np.uint64)
        pos = (ks % np.uint64(self.nbins)).astype(np.intp)
        view = self.slots[ring][:, pos]  # fancy index: a copy, [lane, bin]
        raw_idx = view["idx"]
        base = raw_idx & _IDX_MASK
        valid = base == ks
        newer = base > ks
        older = (base != 0) & (base < ks)
        by, pk = view["bytes"].astype(np.int64), view["packets"].astype(np.int64)
        out = Drained(
            first_bin=start,
            bytes=np.where(valid, by, 0).sum(axis=0),
            packets=np.where(valid, pk, 0).sum(axis=0),
            late_bytes=int(np.where(older, by, 0).sum()),
            late_packets=int(np.where(older, pk, 0).sum()),
            lost_bins=lost + int(newer.any(axis=0).sum()),
            mixed_bins=int((valid & ((raw_idx & OVERRUN_FLAG) != 0)).any(axis=0).sum()),
        )
        lanes, cols = np.nonzero(~newer)
        ring_slots = self.slots[ring]
        target = (lanes, pos[cols])
        ring_slots["bytes"][target] = 0
        ring_slots["packets"][target] = 0
        ring_slots["idx"][target] = 0
        self.cursors[ring] = end
        return out
