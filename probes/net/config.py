"""The network probe's configuration and interface selection (which links to attach to, their speed)."""
from __future__ import annotations

import fnmatch
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpusleuth.probes.config import ConfigError, check_range

GLOB_CHARS = set("*?[")


@dataclass(slots=True)
class NetConfig:
    interval_s: float = 0.5
    interfaces: list[str] = field(default_factory=list)  # names or globs; empty = every up, non-loopback one
    netns: str = ""  # a name under /var/run/netns; empty = the agent's own namespace
    bin_us: int = 100  # time-bin width; 10 .. 1000000 and must divide one second
    ring_s: float = 2.0  # how much history the kernel rings hold (a poll may be this late, less interval_s)
    burst_threshold_pct: float = 50.0  # of link speed
    burst_threshold_mbps: float = 0.0  # > 0: this threshold for every interface instead of the percentage
    fallback_speed_mbps: float = 10000.0  # where the link speed is unknown (veth, other namespaces)
    burst_gap_bins: int = 1  # quiet bins allowed inside one burst
    burst_min_bins: int = 1
    burst_max_s: float = 1.0  # a longer run is reported in pieces (is_truncated)
    top_flows: int = 5
    max_hot_flows: int = 16384  # kernel table of flows seen in hot bins, per poll
    is_tcp_enabled: bool = True  # retransmits and drops (tracepoints)
    is_qdisc_enabled: bool = True
    max_endpoints: int = 256  # distinct remote endpoints / processes kept in the snapshot
    state_dir: str = "/run/gpusleuth"  # where the tc ownership record lives (survives a crash)

    def __post_init__(self) -> None:
        check_range("bin_us", self.bin_us, 10, 1_000_000)
        if 1_000_000 % self.bin_us:
            raise ConfigError("bin_us", f"{self.bin_us} does not divide one second (1000000 µs) evenly; "
                                        "use e.g. 10, 20, 25, 50, 100, 125, 200, 250, 500 or 1000")
        check_range("ring_s", self.ring_s, 2.0, 60.0)
        check_range("interval_s", self.interval_s, 0.01, self.ring_s / 2)
        check_range("burst_threshold_pct", self.burst_threshold_pct, 0.1, 100.0)
        check_range("burst_threshold_mbps", self.burst_threshold_mbps, 0.0, 10_000_000.0)
        check_range("fallback_speed_mbps", self.fallback_speed_mbps, 1.0, 10_000_000.0)
        check_range("burst_gap_bins", self.burst_gap_bins, 0, 1000)
        check_range("burst_min_bins", self.burst_min_bins, 1, 1000)
        check_range("burst_max_s", self.burst_max_s, 0.001, 60.0)
        check_range("top_flows", self.top_flows, 0, 64)
        check_range("max_hot_flows", self.max_hot_flows, 256, 1 << 20)
        check_range("max_endpoints", self.max_endpoints, 1, 100_000)
        if self.netns and not Path(f"/var/run/netns/{self.netns}").exists():
            raise ConfigError("netns", f"no network namespace {self.netns!r} (see `ip netns list`)")
        self._check_interfaces()

    def _check_interfaces(self) -> None:
        """Exact names must exist now (globs may match nothing yet); raises ConfigError naming the entry."""
        exact = [(i, n) for i, n in enumerate(self.interfaces) if not GLOB_CHARS & set(n)]
        for i, name in enumerate(self.interfaces):
            is_glob = bool(GLOB_CHARS & set(name))
            if not name or "/" in name or (len(name) > 15 and not is_glob):
                raise ConfigError(f"interfaces[{i}]", f"{name!r} is not an interface name or glob")
        if not exact:
            return
        known = _interface_names(self.netns)
        if known is None:
            return  # cannot look inside that namespace here (no pyroute2); start() checks again
        where = f"network namespace {self.netns!r}" if self.netns else "the agent's network namespace"
        for i, name in exact:
            if name not in known:
                raise ConfigError(f"interfaces[{i}]", f"no interface named {name!r} in {where}; "
                                                      f"present: {', '.join(sorted(known))}")


def _interface_names(netns: str) -> set[str] | None:
    if not netns:
        return {name for _, name in socket.if_nameindex()}
    try:
        from gpusleuth.probes.net.attach import list_links, open_iproute  # noqa: PLC0415
        with open_iproute(netns) as ipr:
            return {link.name for link in list_links(ipr)}
    except ImportError:
        return None


def select_links(patterns: list[str], links: list[Any]) -> list[Any]:
    """Links the config selects: exact names (loopback allowed), globs and the default (up, not loopback)."""
    if not patterns:
        return [ln for ln in links if ln.is_up and not ln.is_loopback]
    chosen = []
    for ln in links:
        for pat in patterns:
            if pat == ln.name or (GLOB_CHARS & set(pat) and not ln.is_loopback and fnmatch.fnmatchcase(ln.name, pat)):
                chosen.append(ln)
                break
    return chosen


def link_speed_mbps(link: Any, netns: str) -> float | None:
    """Link speed from sysfs (our namespace only); None where the kernel does not know it (veth reports a fixed
    10000 that means nothing, so veth counts as unknown)."""
    if netns or link.kind == "veth":
        return None
    try:
        speed = int(Path(f"/sys/class/net/{link.name}/speed").read_text())
    except (OSError, ValueError):
        return None
    return float(speed) if speed > 0 else None
