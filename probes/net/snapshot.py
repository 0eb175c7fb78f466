"""What the network probe publishes each poll (`store.snapshot("net")`); counters are cumulative since start.

Interfaces and directions are keyed by name ("eth0") and "ingress" / "egress". Events are documented in
probes/net/probe.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class BoundedHist:
    """A histogram with fixed upper bounds (Prometheus `le` semantics); counts has one more entry: +Inf."""

    bounds: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative
    sum: float = 0.0
    count: int = 0


@dataclass(slots=True)
class LastBurst:
    start_ns: int = 0
    end_ns: int = 0
    bytes: int = 0
    peak_bps: float = 0.0  # busiest time bin, bits/s


@dataclass(slots=True)
class DirectionTotals:
    """One (interface, direction): traffic at the tc clsact hook and its microbursts."""

    bytes: int = 0
    packets: int = 0
    bursts: int = 0
    lost_bins: int = 0  # time bins overwritten before a poll read them (polls later than ring_s)
    mixed_bins: int = 0  # bins that also held bytes of an older, undrained lap (counted, not placed in time)
    late_bytes: int = 0  # bytes written for a bin already drained (in the totals, in no bin)
    threshold_bytes_per_bin: int = 0  # a bin at or above this is hot
    duration_seconds: BoundedHist = field(default_factory=BoundedHist)  # burst durations, s
    peak_bps: BoundedHist = field(default_factory=BoundedHist)  # burst peak rates, bits/s
    last_burst: LastBurst | None = None


@dataclass(slots=True)
class QdiscStats:
    """Counters of one queueing qdisc (netlink TCA_STATS2, or TCA_STATS on older kernels)."""

    kind: str = ""
    handle: str = ""  # "major:minor" in hex, or "root"
    backlog_bytes: int = 0
    qlen: int = 0  # packets queued
    drops: int = 0
    requeues: int = 0
    overlimits: int = 0
    bytes: int = 0
    packets: int = 0


@dataclass(slots=True)
class QdiscEntry(QdiscStats):
    parent: str = ""


@dataclass(slots=True)
class RootQdisc(QdiscStats):
    """The root qdisc's counters are the interface totals; every queueing qdisc is listed too."""

    qdiscs: list[QdiscEntry] = field(default_factory=list)


@dataclass(slots=True)
class InterfaceState:
    ifindex: int = 0
    kind: str = ""  # physical, veth, ...
    speed_mbps: float | None = None  # None: the link does not say
    threshold_bps: float = 0.0  # burst threshold as a rate
    directions: dict[str, DirectionTotals] = field(default_factory=dict)
    qdisc: RootQdisc | None = None  # None: no root qdisc, or qdisc reads are off


@dataclass(slots=True)
class RetransmitCounts:
    segments: int = 0  # TCP segments, as the kernel's TcpRetransSegs counts them
    skbs: int = 0
    by_remote: dict[str, int] = field(default_factory=dict)  # "addr:port" -> segments (bounded, rest in "(other)")
    by_process: dict[str, int] = field(default_factory=dict)  # "pid/comm" or "unknown" -> segments


@dataclass(slots=True)
class DropCounts:
    count: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)  # kfree_skb drop reason -> packets
    by_remote: dict[str, int] = field(default_factory=dict)
    by_process: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class TcpLostKeys:
    retransmits: int = 0
    drops: int = 0


@dataclass(slots=True)
class TcpSnapshot:
    """TCP retransmits and skb drops, host-wide (every network namespace) from tracepoints (probes/net/tcp.py)."""

    scope: str = ""
    path: str = ""  # which tracepoints and offsets were used
    retransmits: RetransmitCounts = field(default_factory=RetransmitCounts)
    drops: DropCounts = field(default_factory=DropCounts)
    lost_keys: TcpLostKeys = field(default_factory=TcpLostKeys)  # kernel map entries that had no room
    events_suppressed: int = 0  # Events beyond the per-poll bound (counts still include them)
    missed_events: int = 0  # tracepoint hits the kernel did not deliver (recursion guard)


@dataclass(slots=True)
class KernelStats:
    overrun_writes: int = 0  # writes that found an undrained older lap in their slot
    hot_flows_lost: int = 0  # hot-flow records with no room (raise probes.net.max_hot_flows)


@dataclass(slots=True)
class NetSnapshot:
    t_ns: int = 0
    bin_ns: int = 0
    netns: str = ""
    path: str = ""
    interfaces: dict[str, InterfaceState] = field(default_factory=dict)
    tcp: TcpSnapshot | None = None  # None: TCP tracing off or unavailable
    kernel: KernelStats = field(default_factory=KernelStats)
