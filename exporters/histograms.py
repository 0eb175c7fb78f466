"""Turning the probes' log2 slot counts into Prometheus histogram buckets with fixed boundaries in seconds.

Boundaries run from 2^8 ns (256 ns) to about 2^35 ns (34 s) and grow by `factor` (exporter.bucket_factor): 2 gives
28 buckets, 4 gives 14, 8 gives 10. A series keeps the same buckets for life, so histogram_quantile() is exact at
the bounds; each bucket beyond the first costs one sample per series per scrape, which is why the default is 4
(within a factor of 4 of any latency; `agent explain` and the TUI read the full log2 resolution from the snapshot).
"""
from __future__ import annotations

from functools import cache

from gpusleuth.probes.bpf.log2_hist import slot_upper_seconds

FIRST_SLOT, LAST_SLOT = 8, 35
STEP = {2: 1, 4: 2, 8: 3}  # factor -> log2 slots per bucket


@cache
def bounds(factor: int = 4) -> tuple[tuple[int, str], ...]:
    """(last slot in the bucket, its `le` text) per bucket."""
    return tuple((s, repr(slot_upper_seconds(s))) for s in range(FIRST_SLOT, LAST_SLOT + 1, STEP[factor]))


def prometheus_buckets(counts: dict[int, int], total: int, factor: int = 4) -> list[tuple[str, float]]:
    """[(le, cumulative count)] from sparse {slot: count}, ending with +Inf = total."""
    out = []
    ordered = sorted(counts.items())
    i, running = 0, 0
    for slot, le in bounds(factor):
        while i < len(ordered) and ordered[i][0] <= slot:
            running += ordered[i][1]
            i += 1
        out.append((le, float(running)))
    out.append(("+Inf", float(total)))
    return out


class HistogramSeries:
    """One collector's histogram series across renders: a series whose count and sum did not change since the
    last render reuses its samples (they are immutable), so an idle process's histograms cost a list copy instead
    of 17 new samples each. Written here because prometheus_client rebuilds every sample on every collect."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, ...], tuple[int, int, list]] = {}
        self._seen: set[tuple[str, ...]] = set()

    def add(self, family, labels: tuple[str, ...], h, factor: int) -> None:
        """Add `h` (a Log2Counts) to `family` under `labels`."""
        hit = self._cache.get(labels)
        if hit is not None and hit[0] == h.count and hit[1] == h.sum_ns:
            family.samples.extend(hit[2])
        else:
            n = len(family.samples)
            family.add_metric(list(labels), prometheus_buckets(h.buckets, h.count, factor), h.sum_ns / 1e9)
            self._cache[labels] = (h.count, h.sum_ns, family.samples[n:])
        self._seen.add(labels)

    def sweep(self) -> None:
        """After a render: forget the series it did not add (gone processes)."""
        for key in [k for k in self._cache if k not in self._seen]:
            del self._cache[key]
        self._seen.clear()
