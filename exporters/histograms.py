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
