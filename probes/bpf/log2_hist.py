"""Cumulative log2 latency histograms built from kernel read-and-clear deltas, and their snapshot form.

Slot s (bcc's bpf_log2l) holds values in [2^(s-1), 2^s) ns, so its Prometheus upper bound is 2^s ns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NUM_SLOTS = 65


def slot_upper_seconds(slot: int) -> float:
    return (1 << slot) / 1e9


@dataclass(slots=True)
class Log2Counts:
    """One histogram as a snapshot carries it: counts are cumulative since the probe started."""

    buckets: dict[int, int] = field(default_factory=dict)  # slot -> count, only slots that have any
    count: int = 0
    sum_ns: int = 0


@dataclass(slots=True)
class Log2Hist:
    """A cumulative histogram: counts per slot (sparse), total count and sum in ns, and when it last changed."""

    counts: dict[int, int] = field(default_factory=dict)  # sparse: a snapshot copies it in one C-level call
    count: int = 0
    sum_ns: int = 0
    last_change_ns: int = 0

    def add(self, slot: int, count: int, sum_ns: int, now_ns: int) -> None:
        if count:  # a snapshot lists only slots that have any
            slot = min(slot, NUM_SLOTS - 1)
            self.counts[slot] = self.counts.get(slot, 0) + count
        self.count += count
        self.sum_ns += sum_ns
        self.last_change_ns = now_ns

    def merge(self, other: "Log2Hist") -> None:
        """Add another histogram's counts (an exited process's, into its comm's totals)."""
        for slot, c in other.counts.items():
            self.counts[slot] = self.counts.get(slot, 0) + c
        self.count += other.count
        self.sum_ns += other.sum_ns
        self.last_change_ns = max(self.last_change_ns, other.last_change_ns)

    def snapshot(self) -> Log2Counts:
        """A copy that later adds do not change."""
        return Log2Counts(dict(self.counts), self.count, self.sum_ns)


def quantile_from_buckets(buckets: dict[int, int], q: float) -> float:
    """Approximate quantile (ns) from {slot: count}, interpolating linearly inside the slot."""
    total = sum(buckets.values())
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for slot in sorted(buckets):
        c = buckets[slot]
        if seen + c >= rank:
            lo = (1 << (slot - 1)) if slot > 0 else 0
            hi = 1 << slot
            return lo + (hi - lo) * ((rank - seen) / c if c else 0.0)
        seen += c
    return float(1 << max(buckets))
