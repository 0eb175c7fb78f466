"""The network probe's user-space state per (interface, direction): totals, burst histograms, hot flows, Events."""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from gpusleuth.probes.net.bursts import Burst, BurstDetector
from gpusleuth.probes.net.owners import OwnerResolver
from gpusleuth.probes.net.ring import Drained
from gpusleuth.probes.net.snapshot import BoundedHist, DirectionTotals, LastBurst
from gpusleuth.probes.net.tc import HotFlow
from gpusleuth.probes.records import Event

DURATION_BOUNDS_S = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0)
PEAK_BOUNDS_BPS = (1e8, 2.5e8, 5e8, 1e9, 2.5e9, 5e9, 1e10, 2.5e10, 5e10, 1e11, 2e11, 4e11, 8e11)
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp"}


@dataclass(slots=True)
class Hist:
    """A cumulative histogram with fixed upper bounds (Prometheus `le` semantics; the last bucket is +Inf)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> BoundedHist:
        return BoundedHist(list(self.bounds), list(self.counts), self.sum, sum(self.counts))


@dataclass(slots=True)
class RingState:
    """Totals and burst bookkeeping of one (interface, direction)."""

    iface: str
    direction: str
    threshold_bytes: int
    detector: BurstDetector
    bytes: int = 0
    packets: int = 0
    bursts: int = 0
    lost_bins: int = 0
    mixed_bins: int = 0
    late_bytes: int = 0
    durations: Hist = field(default_factory=lambda: Hist(DURATION_BOUNDS_S))
    peaks: Hist = field(default_factory=lambda: Hist(PEAK_BOUNDS_BPS))
    last_burst: LastBurst | None = None

    def account(self, drained: Drained) -> list[Burst]:
        self.bytes += drained.total_bytes
        self.packets += drained.total_packets
        self.lost_bins += drained.lost_bins
        self.mixed_bins += drained.mixed_bins
        self.late_bytes += drained.late_bytes
        return self.detector.feed(drained.first_bin, drained.bytes, drained.packets)

    def snapshot(self) -> DirectionTotals:
        return DirectionTotals(self.bytes, self.packets, self.bursts, self.lost_bins, self.mixed_bins, self.late_bytes,
                               self.threshold_bytes, self.durations.snapshot(), self.peaks.snapshot(), self.last_burst)


class FlowBook:
    """Hot flows per (ring, 10 ms group), kept until the bursts that may claim them have been reported."""

    def __init__(self, group_bins: int) -> None:
        self.group_bins = group_bins
        self._groups: dict[tuple[int, int], dict[tuple, list[int]]] = defaultdict(dict)

    def add(self, flows: list[HotFlow]) -> None:
        for f in flows:
            acc = self._groups[(f.ring, f.group)].setdefault((f.proto, f.src, f.sport, f.dst, f.dport), [0, 0])
            acc[0] += f.bytes
            acc[1] += f.packets

    def top(self, ring: int, start_bin: int, end_bin: int, n: int) -> list[tuple[tuple, int, int]]:
        """The n largest flows (by bytes) of `ring` in the groups spanning bins [start_bin, end_bin)."""
        merged: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
        for g in range(start_bin // self.group_bins, (end_bin - 1) // self.group_bins + 1):
            for key, (b, p) in self._groups.get((ring, g), {}).items():
                merged[key][0] += b
                merged[key][1] += p
        ranked = sorted(merged.items(), key=lambda kv: kv[1][0], reverse=True)[:n]
        return [(key, b, p) for key, (b, p) in ranked]

    def prune(self, ring: int, keep_from_bin: int) -> None:
        """Forget `ring`'s groups that end before `keep_from_bin`."""
        first_kept = keep_from_bin // self.group_bins
        for key in [k for k in self._groups if k[0] == ring and k[1] < first_kept]:
            del self._groups[key]


def flow_dicts(top: list[tuple[tuple, int, int]], direction: str, owners: OwnerResolver | None) -> list[dict]:
    """Top flows as Event attributes, each with its owning process where /proc can tell."""
    out = []
    for (proto, src, sport, dst, dport), b, p in top:
        # bytes: estimated from byte-based samples (net_tc.c record_flow); samples: how many packets were sampled
        d = {"proto": PROTO_NAMES.get(proto, str(proto)), "src": f"{src}:{sport}" if src else "",
             "dst": f"{dst}:{dport}" if dst else "", "bytes": b, "samples": p, "pid": 0, "comm": ""}
        if owners is not None and src:
            # Egress packets leave from a local socket (src); ingress packets arrive at one (dst).
            local, lport, remote, rport = (src, sport, dst, dport) if direction == "egress" else (dst, dport, src,
                                                                                                  sport)
            owner = owners.owner(proto, local, lport, remote, rport)
            if owner is not None:
                d["pid"], d["comm"] = owner.pid, owner.comm
        out.append(d)
    return out


def burst_event(ring: RingState, burst: Burst, bin_ns: int, flows: list[dict]) -> Event:
    """The Event for one microburst (kind "net.microburst")."""
    start, end = burst.start_bin * bin_ns, burst.end_bin * bin_ns
    peak_bps = burst.peak_bytes * 8 * 1e9 / bin_ns
    attrs = {"interface": ring.iface, "direction": ring.direction, "bytes": burst.bytes, "packets": burst.packets,
             "peak_bps": peak_bps, "mean_bps": burst.bytes * 8 * 1e9 / max(1, end - start),
             "bins": burst.end_bin - burst.start_bin, "hot_bins": burst.hot_bins, "bin_ns": bin_ns,
             "threshold_bps": ring.threshold_bytes * 8 * 1e9 / bin_ns, "is_truncated": burst.is_truncated,
             "top_flows": flows}
    owner = next((f for f in flows if f["pid"]), None)
    return Event(kind="net.microburst", source="net", start_ns=start, end_ns=end,
                 pid=owner["pid"] if owner else 0, comm=owner["comm"] if owner else "", attrs=attrs)


def record_burst(ring: RingState, event: Event) -> None:
    ring.bursts += 1
    ring.durations.observe(event.duration_ns / 1e9)
    ring.peaks.observe(event.attrs["peak_bps"])
    ring.last_burst = LastBurst(event.start_ns, event.end_ns, event.attrs["bytes"], event.attrs["peak_bps"])
