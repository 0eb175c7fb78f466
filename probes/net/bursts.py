"""Microburst detection over drained time bins: a burst is a run of bins at or above a byte threshold.

Bins arrive in consecutive chunks (one per drain); a run still open at the end of a chunk carries over, so a
burst that straddles two polls is reported once, whole, when it ends. Up to `gap_bins` quiet bins inside a run do
not end it (a sender preempted for a bin is still one burst); a run that reaches `max_bins` is reported as a
truncated burst and a new one starts (a saturated link is not one endless burst).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Burst:
    """Bins [start_bin, end_bin) of one ring, with their totals."""

    start_bin: int
    end_bin: int
    bytes: int
    packets: int
    peak_bytes: int  # largest single bin
    hot_bins: int
    is_truncated: bool = False


class BurstDetector:
    """Feed consecutive chunks of bins; get back the bursts that ended."""

    def __init__(self, threshold_bytes: int, gap_bins: int = 1, min_bins: int = 1, max_bins: int = 10_000) -> None:
        assert threshold_bytes > 0 and gap_bins >= 0 and 1 <= min_bins <= max_bins
        self.threshold_bytes = threshold_bytes
        self.gap_bins = gap_bins
        self.min_bins = min_bins
        self.max_bins = max_bins
        self._open: Burst | None = None  # a run whose end has not been seen yet
        self._last_hot = -1  # bin number of the open run's last hot bin
        self._next_bin: int | None = None
        self._pending = [0, 0, 0]  # bytes, packets, peak of quiet bins after the last hot bin, in earlier chunks

    def feed(self, first_bin: int, by: np.ndarray, pk: np.ndarray) -> list[Burst]:
        """Process bins [first_bin, first_bin + len(by)); returns bursts that are now complete."""
        assert self._next_bin is None or first_bin >= self._next_bin, "chunks must not overlap"
        done: list[Burst] = []
        if self._open is not None and self._next_bin is not None and first_bin > self._next_bin:
            self._close_if_quiet(first_bin, done)  # a gap in coverage (lost bins) counts as quiet
        hot = np.flatnonzero(by >= self.threshold_bytes)
        for i in hot.tolist():
            b = first_bin + i
            if self._open is not None and b - self._last_hot > self.gap_bins + 1:
                self._finish(done)
            if self._open is None:
                self._open = Burst(b, b, 0, 0, 0, 0)
            self._extend_to(b + 1, first_bin, by, pk)
            self._open.hot_bins += 1
            self._last_hot = b
            if self._open.end_bin - self._open.start_bin >= self.max_bins:
                self._open.is_truncated = True
                self._finish(done)
        end = first_bin + len(by)
        self._next_bin = end
        self._close_if_quiet(end, done)
        if self._open is not None:
            tail_b = by[max(self._last_hot + 1, first_bin) - first_bin:]
            tail_p = pk[max(self._last_hot + 1, first_bin) - first_bin:]
            if len(tail_b):
                self._pending[0] += int(tail_b.sum())
                self._pending[1] += int(tail_p.sum())
                self._pending[2] = max(self._pending[2], int(tail_b.max()))
        return done

    def _extend_to(self, new_end: int, first_bin: int, by: np.ndarray, pk: np.ndarray) -> None:
        """Add bins [open.end_bin, new_end) (those inside this chunk) to the open run."""
        burst = self._open
        if burst.end_bin < first_bin:  # quiet bins of earlier chunks now lie inside the run
            burst.bytes += self._pending[0]
            burst.packets += self._pending[1]
            burst.peak_bytes = max(burst.peak_bytes, self._pending[2])
        self._pending = [0, 0, 0]
        lo = max(burst.end_bin, first_bin) - first_bin
        hi = new_end - first_bin
        if hi > lo:
            seg_b = by[lo:hi]
            burst.bytes += int(seg_b.sum())
            burst.packets += int(pk[lo:hi].sum())
            burst.peak_bytes = max(burst.peak_bytes, int(seg_b.max()))
        burst.end_bin = new_end

    def _close_if_quiet(self, next_bin: int, done: list[Burst]) -> None:
        if self._open is not None and next_bin - self._last_hot > self.gap_bins + 1:
            self._finish(done)

    def _finish(self, done: list[Burst]) -> None:
        burst, self._open = self._open, None
        self._pending = [0, 0, 0]
        # The run ends at its last hot bin; quiet bins after it were never added (see _extend_to).
        if burst is not None and burst.end_bin - burst.start_bin >= self.min_bins:
            done.append(burst)

    @property
    def open_start_bin(self) -> int | None:
        """First bin of the run still in progress, if any (its flows must be kept until it ends)."""
        return self._open.start_bin if self._open is not None else None
