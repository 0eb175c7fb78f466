"""TCP retransmits (tcp:tcp_retransmit_skb, tcp:tcp_retransmit_synack) and skb drops (skb:kfree_skb with its reason),
counted per remote endpoint and per process, with one Event per (connection or drop kind) per poll.

Counts are host-wide: tracepoints see every network namespace; the endpoint labels tell them apart. Retransmits
count segments the way the kernel's TcpRetransSegs does (the skb's TCP segment count, read at offsets taken from
the running kernel's BTF; without BTF each retransmitted skb counts as one). Owners come from a socket -> process
table the kernel side fills where the kernel runs in the process's context (connect, and every TCP send where
sock:sock_send_length exists), else from a /proc scan in the probe's namespace.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path
from typing import Any

from gpusleuth.probes.bpf import compiler as bpf_compiler
from gpusleuth.probes.bpf import host as bpf_host
from gpusleuth.probes.bpf import maps as bpf_maps
from gpusleuth.probes.base import ProbeUnavailable
from gpusleuth.probes.net.owners import OwnerResolver
from gpusleuth.probes.records import Event, Sample
from gpusleuth.probes.net.tcp_counters import BoundedCounter
from gpusleuth.probes.net.snapshot import DropCounts, RetransmitCounts, TcpLostKeys, TcpSnapshot

log = logging.getLogger(__name__)
C_SOURCE = Path(__file__).with_name("tcp.c")
C_PROGRAMS = {True: Path(__file__).with_name("tcp_raw.c"), False: Path(__file__).with_name("tcp_tp.c")}
REQUIRED = [("tcp", "tcp_retransmit_skb"), ("skb", "kfree_skb"), ("sock", "inet_sock_set_state")]
MAX_EVENTS_PER_POLL = 256
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


def tracepoint_format(category: str, event: str) -> str:
    root = bpf_host.tracefs_root()
    try:
        return Path(root, "events", category, event, "format").read_text() if root else ""
    except OSError:
        return ""


def has_field(fmt: str, name: str) -> bool:
    return re.search(rf"field:[^;]*[\s*]{name}(\[\d+\])?;", fmt) is not None


def drop_reason_names(fmt: str) -> dict[int, str]:
    """Enum value -> name, from kfree_skb's print format (`__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }...`)."""
    start = fmt.find("__print_symbolic(REC->reason")
    return {int(n): s for n, s in re.findall(r"\{\s*(\d+),\s*\"(\w+)\"\s*\}", fmt[start:])} if start >= 0 else {}


def _addr(family: int, raw: bytes) -> str:
    if family == 2:
        return str(ipaddress.IPv4Address(raw[:4]))
    ip = ipaddress.IPv6Address(raw[:16])
    return str(ip.ipv4_mapped or ip)


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


class TcpTracer:
    """Loads tcp.c; `poll` returns (samples, events, snapshot)."""

    def __init__(self, max_endpoints: int, netns: str = "", local_addrs: Any = None,
                 allow_raw: bool = True) -> None:
        self.max_endpoints = max_endpoints
        self.allow_raw = allow_raw  # False forces classic tracepoints (tests compare both paths)
        self.netns = netns
        self._local_addrs = local_addrs or (lambda: set())  # callable: this namespace's addresses
        self._bpf: Any = None
        self._defines: dict[str, Any] = {}
        self._reasons: dict[int, str] = {}
        self.path = ""
        self.retrans = {"segments": 0, "skbs": 0, "by_remote": BoundedCounter(max_endpoints),
                        "by_process": BoundedCounter(max_endpoints)}
        self.drops = {"count": 0, "by_reason": BoundedCounter(1024), "by_remote": BoundedCounter(max_endpoints),
                      "by_process": BoundedCounter(max_endpoints)}
        self.suppressed_events = 0
        self._owners: OwnerResolver | None = None
        self._misses: Any = None

    def source(self) -> str:
        """The generated C text: shared maps and helpers, then the raw or classic tracepoint programs."""
        programs = C_PROGRAMS[bool(self._defines.get("USE_RAW"))].read_text()
        return bpf_compiler.render_source(C_SOURCE, self._defines) + "\n" + programs

    def start(self) -> None:
        missing = [f"{c}:{e}" for c, e in REQUIRED if not bpf_host.tracepoint_exists(c, e)]
        if missing:
            raise ProbeUnavailable(f"tracepoints missing: {', '.join(missing)}")
        kfree = tracepoint_format("skb", "kfree_skb")
        self._reasons = drop_reason_names(kfree)
        self._defines = {
            "MAX_KEYS": 16384, "MAX_SOCKS": 65536,
            "HAS_RETRANS_ERR": int(has_field(tracepoint_format("tcp", "tcp_retransmit_skb"), "err")),
            "HAS_SEND_LENGTH": int(bpf_host.tracepoint_exists("sock", "sock_send_length")),
            "HAS_DROP_REASON": int(has_field(kfree, "reason")), "HAS_RX_SK": int(has_field(kfree, "rx_sk")),
        }
        btf_note = self._btf_defines()
        self._defines["HAS_SYNACK"] = int(bpf_host.tracepoint_exists("tcp", "tcp_retransmit_synack"))
        self._bpf = bpf_compiler.compile_bpf(self.source())
        try:
            self._owners = OwnerResolver(self.netns)
        except OSError:
            self._owners = None
        owners = "sock_send_length + connect" if self._defines["HAS_SEND_LENGTH"] else "connect only + /proc"
        kind = "raw tracepoints" if self._defines["USE_RAW"] else "tracepoints"
        self.path = f"tcp/skb {kind}, {btf_note}, owners: {owners}"

    def _btf_defines(self) -> str:
        """Offsets from the running kernel's BTF, and with them the raw-tracepoint path where it is possible."""
        from gpusleuth.probes.net.btf import Btf, BtfError, ProgMisses, skb_offsets, sock_offsets  # noqa: PLC0415
        self._defines.update(HAS_SKB_BTF=0, USE_RAW=0)
        try:
            btf = Btf.load()
            self._defines.update(skb_offsets(btf))
            self._defines["HAS_SKB_BTF"] = 1
        except BtfError as exc:
            log.info("no BTF skb offsets (%s): counting skbs, drops addressed by socket only", exc)
            return f"no BTF ({exc}): retransmitted skbs counted as one segment"
        bcc = bpf_host.import_bcc()
        try:
            if self.allow_raw and bcc.BPF.support_raw_tracepoint():
                self._defines.update(sock_offsets(btf))
                self._defines["USE_RAW"] = 1
        except BtfError as exc:
            log.info("classic tracepoints (socket offsets unavailable: %s)", exc)
        try:
            self._misses = ProgMisses(btf)
        except BtfError:
            self._misses = None
        return "segments + drop addresses from BTF offsets"

    def missed_events(self) -> int:
        """Events the kernel did not deliver to our programs (recursion guard); 0 where unknown."""
        if self._bpf is None or self._misses is None:
            return 0
        return sum(self._misses.misses(fn.fd) for fn in self._bpf.funcs.values())

    def stop(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    # ------------------------------------------------------------------ polling
    def poll(self, now_ns: int) -> tuple[list[Sample], list[Event], TcpSnapshot]:
        if self._owners is not None:
            self._owners.begin()
        events: list[Event] = []
        seg_delta = drop_delta = 0
        for k, v in bpf_maps.drain(self._bpf["retrans"]):
            seg_delta += v.segs
            events.append(self._retrans_event(k, v))
        local = self._local_addrs()
        for k, v in bpf_maps.drain(self._bpf["drops"]):
            drop_delta += v.count
            events.append(self._drop_event(k, v, local))
        if len(events) > MAX_EVENTS_PER_POLL:
            events.sort(key=lambda e: e.attrs.get("segments", e.attrs.get("count", 0)), reverse=True)
            self.suppressed_events += len(events) - MAX_EVENTS_PER_POLL
            events = events[:MAX_EVENTS_PER_POLL]
        samples = [Sample("net.tcp_retransmit_segments", now_ns, float(seg_delta)),
                   Sample("net.skb_drops", now_ns, float(drop_delta))]
        return samples, events, self.snapshot()

    def _who(self, pid: int, comm: bytes, proto: int, local: tuple[str, int], remote: tuple[str, int]) -> tuple:
        if pid:
            return pid, bpf_maps.comm_str(comm)
        if self._owners is not None and local[0]:
            owner = self._owners.owner(proto, local[0], local[1], remote[0], remote[1])
            if owner is not None:
                return owner.pid, owner.comm
        return 0, ""

    def _retrans_event(self, k: Any, v: Any) -> Event:
        src, dst = _addr(k.family, bytes(k.saddr)), _addr(k.family, bytes(k.daddr))
        pid, comm = self._who(v.who.pid, bytes(v.who.comm), 6, (src, k.sport), (dst, k.dport))
        remote = _endpoint(dst, k.dport)
        self.retrans["segments"] += v.segs
        self.retrans["skbs"] += v.skbs
        self.retrans["by_remote"].add(remote, v.segs)
        self.retrans["by_process"].add(f"{pid}/{comm}" if pid else "unknown", v.segs)
        return Event(kind="net.tcp_retransmit", source="net", start_ns=v.first_ns, end_ns=v.last_ns, pid=pid,
                     comm=comm, attrs={"local": _endpoint(src, k.sport), "remote": remote, "segments": v.segs,
                                       "skbs": v.skbs, "bytes": v.bytes})

    def _drop_event(self, k: Any, v: Any, local: set[str]) -> Event:
        reason = self._reasons.get(k.reason, str(k.reason))
        t = k.t
        attrs: dict[str, Any] = {"reason": reason, "ethertype": f"{k.ethertype:#06x}", "count": v.count,
                                 "bytes": v.bytes}
        remote = ""
        if t.family:
            src, dst = _addr(t.family, bytes(t.saddr)), _addr(t.family, bytes(t.daddr))
            attrs.update(proto=PROTO_NAMES.get(t.proto, str(t.proto)), src=_endpoint(src, t.sport),
                         dst=_endpoint(dst, t.dport))
            # The remote side is whichever address is not ours; unknown orientation reads as outgoing.
            remote = attrs["src"] if dst in local and src not in local else attrs["dst"]
            attrs["remote"] = remote
        pid, comm = v.who.pid, bpf_maps.comm_str(bytes(v.who.comm))
        self.drops["count"] += v.count
        self.drops["by_reason"].add(reason, v.count)
        if remote:
            self.drops["by_remote"].add(remote, v.count)
        self.drops["by_process"].add(f"{pid}/{comm}" if pid else "unknown", v.count)
        return Event(kind="net.skb_drop", source="net", start_ns=v.first_ns, end_ns=v.last_ns, pid=pid, comm=comm,
                     attrs=attrs)

    def snapshot(self) -> TcpSnapshot:
        lost = [v.value for _, v in self._bpf["lost"].items()] if self._bpf is not None else [0, 0]
        rt, dr = self.retrans, self.drops
        return TcpSnapshot(
            scope="host (all network namespaces)", path=self.path,
            retransmits=RetransmitCounts(rt["segments"], rt["skbs"], rt["by_remote"].to_dict(),
                                         rt["by_process"].to_dict()),
            drops=DropCounts(dr["count"], dr["by_reason"].to_dict(), dr["by_remote"].to_dict(),
                             dr["by_process"].to_dict()),
            lost_keys=TcpLostKeys(lost[0], lost[1]), events_suppressed=self.suppressed_events,
            missed_events=self.missed_events())
