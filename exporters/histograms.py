"""Turning the probes' log2 slot counts into Prometheus histogram buckets with fixed boundaries in seconds."""
from __future__ import annotations

from gpusleuth.probes.bpf.log2_hist import slot_upper_seconds

# Fixed boundaries 2^8 ns (256 ns) .. 2^35 ns (34 s): a series keeps the same buckets for life, so
# histogram_quantile() is exact at the bounds. Slots below the first bound fold into it.
FIRST_SLOT, LAST_SLOT = 8, 35
BOUNDS = [(s, slot_upper_seconds(s)) for s in range(FIRST_SLOT, LAST_SLOT + 1)]


def prometheus_buckets(counts: dict[int, int], total: int) -> list[tuple[str, float]]:
    """[(le, cumulative count)] from sparse {slot: count}, ending with +Inf = total."""
    out = []
    running = sum(c for s, c in counts.items() if s < FIRST_SLOT)
    for slot, upper in BOUNDS:
        running += counts.get(slot, 0)
        out.append((repr(upper), float(running)))
    out.append(("+Inf", float(total)))
    return out
