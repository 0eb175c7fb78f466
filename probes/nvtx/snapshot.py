"""What the NVTX intake publishes each poll (`store.snapshot("nvtx")`): processes whose NVTX ranges arrive through
the injection library, and counters."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class NvtxSender:
    comm: str = ""
    ranges: int = 0  # ranges and marks received
    dropped: int = 0  # the library's own count: its rings were full, or the socket was (cumulative)
    last_seen_ns: int = 0
    domains: list[str] = field(default_factory=list)


@dataclass(slots=True)
class NvtxSnapshot:
    t_ns: int = 0
    socket: str = ""
    datagrams_total: int = 0
    decode_errors_total: int = 0
    queue_drops_total: int = 0  # datagrams dropped because too many waited between polls
    ranges_total: int = 0
    events_dropped_total: int = 0  # ranges beyond max_events_per_poll, not stored as events
    senders: dict[int, NvtxSender] = field(default_factory=dict)  # by pid
    watch_pids: list[int] = field(default_factory=list)  # processes sending ranges, for the kernel probes
