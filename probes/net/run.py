"""One started network probe: the tc programs attached to the selected interfaces, the TCP tracer, qdisc reads."""
from __future__ import annotations

import logging
import time
from typing import Any

from gpusleuth.probes.base import PollResult, ProbeUnavailable
from gpusleuth.probes.net.config import GLOB_CHARS, NetConfig, link_speed_mbps, select_links
from gpusleuth.probes.net.attach import OUR_PRIO, TcAttacher, list_links, open_iproute
from gpusleuth.probes.net.bursts import BurstDetector
from gpusleuth.probes.net.owners import OwnerResolver
from gpusleuth.probes.net.state import FlowBook, RingState, burst_event, flow_dicts, record_burst
from gpusleuth.probes.net.tc import DIRECTIONS, RingLayout, TcPrograms
from gpusleuth.probes.net.qdisc import read_qdiscs
from gpusleuth.probes.net.snapshot import InterfaceState, NetSnapshot, RootQdisc, TcpSnapshot
from gpusleuth.probes.records import Sample

log = logging.getLogger(__name__)
OWNER_PATH = "procfs socket-inode scan when hot flows appear, cached by 5-tuple"
LOCAL_ADDRS_TTL_NS = 5_000_000_000
MAX_RING_BYTES = 512 << 20


class NetRun:
    def __init__(self, cfg: NetConfig) -> None:
        self.cfg = cfg
        self.ipr: Any = None
        self.tc: TcPrograms | None = None
        self.attacher: TcAttacher | None = None
        self.links: list[Any] = []
        self.rings: list[RingState] = []
        self.iface_info: dict[str, dict[str, Any]] = {}
        self.flows: FlowBook | None = None
        self.owners: OwnerResolver | None = None
        self.tcp: Any = None
        self.tcp_reason = ""
        self.foreign: dict[str, list[str]] = {}
        self.path = ""
        self._addrs: set[str] = set()
        self._addrs_at = -LOCAL_ADDRS_TTL_NS

    @staticmethod
    def preview_source(cfg: NetConfig) -> str:
        return TcPrograms(RingLayout.for_config(cfg.bin_us, cfg.ring_s, 1), cfg.max_hot_flows).source()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        cfg = self.cfg
        self.ipr = open_iproute(cfg.netns)
        links = list_links(self.ipr)
        names = {ln.name for ln in links}
        for i, pat in enumerate(cfg.interfaces):
            if not GLOB_CHARS & set(pat) and pat not in names:
                raise ProbeUnavailable(f"probes.net.interfaces[{i}]: no interface named {pat!r} any more")
        self.links = select_links(cfg.interfaces, links)
        if not self.links:
            raise ProbeUnavailable("no interface selected: none is up (besides loopback) or matches "
                                   f"probes.net.interfaces {cfg.interfaces}")
        layout = RingLayout.for_config(cfg.bin_us, cfg.ring_s, len(self.links))
        if layout.nbytes > MAX_RING_BYTES:
            raise ProbeUnavailable(
                f"the bin rings would take {layout.nbytes >> 20} MiB of kernel memory ({len(self.links)} interfaces "
                f"x 2 directions x {layout.nlanes} CPU lanes x {layout.nbins} bins); raise probes.net.bin_us, lower "
                f"probes.net.ring_s or select fewer interfaces (probes.net.interfaces)")
        self.attacher = TcAttacher(self.ipr, cfg.netns, cfg.state_dir)  # refuses if a live agent owns the filters
        self.tc = TcPrograms(layout, cfg.max_hot_flows)
        self.tc.load()
        self.attacher.recover({ln.name: ln for ln in links})
        for slot, link in enumerate(self.links):
            self._register(slot, link)
        self.tc.rings.start(time.monotonic_ns())  # before attaching: no packet can land before the cursor
        for link in self.links:
            self.attacher.attach(link, self.tc.fds)
        self.foreign = {ln.name: [f.describe() for f in self.attacher.filters(ln.index)
                                  if not f.is_ours(self.attacher.handle)] for ln in self.links}
        self.flows = FlowBook(self.tc.group_bins)
        try:
            self.owners = OwnerResolver(cfg.netns)
        except OSError as exc:
            log.info("flow owners unavailable: %s", exc)
        if cfg.is_tcp_enabled:
            self._start_tcp()
        lay = self.tc.layout
        self.path = (f"tc clsact bpf (pref {OUR_PRIO}, handle {self.attacher.handle:#x}), {lay.bin_ns // 1000} us "
                     f"bins x {lay.nbins} x {lay.nlanes} lanes, mmap drain; owners: {OWNER_PATH}; tcp: {self.tcp.path if self.tcp else 'off'}")

    def _register(self, slot: int, link: Any) -> None:
        cfg = self.cfg
        speed = link_speed_mbps(link, cfg.netns)
        if cfg.burst_threshold_mbps > 0:
            thr_bps = cfg.burst_threshold_mbps * 1e6
        else:
            thr_bps = (speed or cfg.fallback_speed_mbps) * 1e6 * cfg.burst_threshold_pct / 100
        thr_bytes = max(1, int(thr_bps / 8 * cfg.bin_us / 1e6))
        self.tc.set_iface(link.index, slot, link.l2_len, thr_bytes)
        max_bins = max(1, int(cfg.burst_max_s * 1e6 / cfg.bin_us))
        for direction in DIRECTIONS:
            det = BurstDetector(thr_bytes, cfg.burst_gap_bins, min(cfg.burst_min_bins, max_bins), max_bins)
            self.rings.append(RingState(link.name, direction, thr_bytes, det))
        self.iface_info[link.name] = {"ifindex": link.index, "kind": link.kind, "speed_mbps": speed,
                                      "threshold_bps": thr_bytes * 8 / (cfg.bin_us / 1e6)}

    def _start_tcp(self) -> None:
        try:
            from gpusleuth.probes.net.tcp import TcpTracer  # noqa: PLC0415
            tracer = TcpTracer(self.cfg.max_endpoints, self.cfg.netns, self._local_addrs)
            tracer.start()
            self.tcp = tracer
        except (ImportError, ProbeUnavailable) as exc:
            self.tcp_reason = f"tcp retransmits/drops unavailable: {exc}"
            log.warning("%s", self.tcp_reason)

    def _local_addrs(self) -> set[str]:
        """This namespace's own addresses (to tell which side of a dropped packet is remote), re-read every
        LOCAL_ADDRS_TTL_NS: a netlink dump per poll would lengthen every poll for addresses that rarely change."""
        now = time.monotonic_ns()
        if now - self._addrs_at < LOCAL_ADDRS_TTL_NS:
            return self._addrs
        try:
            self._addrs = {m.get_attr("IFA_ADDRESS") for m in self.ipr.get_addr()} - {None}
            self._addrs_at = now
        except Exception as exc:  # pyroute2 NetlinkError; orientation then falls back to "outgoing"
            log.debug("listing addresses: %s", exc)
        return self._addrs

    def stop(self) -> None:
        steps = [("tcp tracer", lambda: self.tcp and self.tcp.stop()),
                 ("tc filters", lambda: self.attacher and self.attacher.detach_all()),
                 ("bpf programs", lambda: self.tc and self.tc.close()),
                 ("netlink socket", lambda: self.ipr and self.ipr.close())]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # keep cleaning up the rest; say which step failed
                log.error("net probe stop: %s: %s", what, exc)
        self.tcp = self.attacher = self.tc = self.ipr = None

    # ------------------------------------------------------------------ polling
    def poll(self, now_ns: int) -> PollResult:
        # Read the clock first, then the hot flows: every packet in a bin complete at `now` is already in them.
        now = time.monotonic_ns()
        flows = self.tc.take_flows()
        self.flows.add(flows)
        if self.owners is not None:
            self.owners.begin()
            self._learn_owners(flows)
        result = PollResult()
        bin_ns = self.tc.layout.bin_ns
        for r, ring in enumerate(self.rings):
            drained = self.tc.drain(r, now)
            labels = {"interface": ring.iface, "direction": ring.direction}
            result.samples.append(Sample("net.bytes", now_ns, float(drained.total_bytes), labels))
            result.samples.append(Sample("net.packets", now_ns, float(drained.total_packets), labels))
            for burst in ring.account(drained):
                top = self.flows.top(r, burst.start_bin, burst.end_bin, self.cfg.top_flows)
                event = burst_event(ring, burst, bin_ns, flow_dicts(top, ring.direction, self.owners))
                record_burst(ring, event)
                result.events.append(event)
            open_start = ring.detector.open_start_bin
            self.flows.prune(r, open_start if open_start is not None else self.tc.rings.cursors[r])
        tcp_snap = None
        if self.tcp is not None:
            samples, events, tcp_snap = self.tcp.poll(now_ns)
            result.samples.extend(samples)
            result.events.extend(events)
        result.snapshot = self._snapshot(now_ns, tcp_snap)
        return result

    def _learn_owners(self, flows: list) -> None:
        """Look up owners of new hot flows now, while their processes are most likely still alive."""
        seen = set()
        for f in flows:
            egress = f.ring % 2 == 1
            key = (f.proto, f.src, f.sport, f.dst, f.dport) if egress else (f.proto, f.dst, f.dport, f.src, f.sport)
            if key not in seen and key[1]:
                seen.add(key)
                self.owners.owner(*key)

    def _snapshot(self, now_ns: int, tcp_snap: TcpSnapshot | None) -> NetSnapshot:
        ifaces = {link.name: InterfaceState(**self.iface_info[link.name],
                                            qdisc=self._qdisc(link) if self.cfg.is_qdisc_enabled else None)
                  for link in self.links}
        for ring in self.rings:
            ifaces[ring.iface].directions[ring.direction] = ring.snapshot()
        return NetSnapshot(t_ns=now_ns, bin_ns=self.tc.layout.bin_ns, netns=self.cfg.netns, path=self.path,
                           interfaces=ifaces, tcp=tcp_snap, kernel=self.tc.stats())

    def _qdisc(self, link: Any) -> RootQdisc | None:
        try:
            return read_qdiscs(self.ipr, link.index)
        except Exception as exc:  # pyroute2 NetlinkError: the interface went away; report no qdisc
            log.debug("qdisc stats of %s: %s", link.name, exc)
            return None

    # ------------------------------------------------------------------ status
    @property
    def degraded_reason(self) -> str:
        reasons = []
        lost = sum(r.lost_bins for r in self.rings)
        if lost:
            reasons.append(f"{lost} bins lost because a poll came more than ring_s late "
                           "(raise probes.net.ring_s or lower probes.net.interval_s)")
        if self.tc is not None and self.tc.rings is not None:
            flows_lost = self.tc.stats().hot_flows_lost
            if flows_lost:
                reasons.append(f"{flows_lost} hot-flow records lost (raise probes.net.max_hot_flows)")
        if self.tcp_reason:
            reasons.append(self.tcp_reason)
        return "; ".join(reasons)

    def status_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"interfaces": [ln.name for ln in self.links], "owner_path": OWNER_PATH,
                                   "foreign_filters": self.foreign}
        if self.tc is not None:
            lay = self.tc.layout
            details.update(bin_us=lay.bin_ns // 1000, ring_bins=lay.nbins, lanes=lay.nlanes,
                           ring_bytes=lay.nbytes)
        return details
