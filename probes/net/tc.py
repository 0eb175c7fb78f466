"""Loader of the tc programs in net_tc.c: compile, map the bin rings, register interfaces, read hot flows.

Attaching the programs to interfaces is net_attach.py's job; this module only owns the BPF object.
"""
from __future__ import annotations

import ctypes
import ipaddress
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpusleuth.probes.bpf import compiler as bpf_compiler
from gpusleuth.probes.bpf import host as bpf_host
from gpusleuth.probes.bpf import maps as bpf_maps
from gpusleuth.probes.net.ring import SLOT_DTYPE, BinRings, Drained
from gpusleuth.probes.net.snapshot import KernelStats

C_SOURCE = Path(__file__).with_name("tc.c")
GROUP_NS = 10_000_000  # hot flows are grouped per 10 ms, so each burst takes the flows of the groups it spans
GUARD_NS = 1_000_000  # a bin is drained only this long after it ended (writers that read the clock just before)
SAMPLES_PER_HOT_BIN = 32  # hot-flow samples per lane per bin at the threshold rate (more above it)
DIRECTIONS = ("ingress", "egress")  # ring = 2 * interface slot + direction index


def lanes_for(ncpu: int, max_lanes: int = 4) -> int:
    """Power-of-two number of CPU lanes per ring: fewer CPUs adding to one cache line at high packet rates."""
    lanes = 1
    while lanes < min(ncpu, max_lanes):
        lanes *= 2
    return lanes


@dataclass(slots=True, frozen=True)
class RingLayout:
    bin_ns: int
    nbins: int
    nlanes: int
    nrings: int

    @classmethod
    def for_config(cls, bin_us: int, ring_s: float, n_ifaces: int, ncpu: int | None = None) -> "RingLayout":
        bin_ns = bin_us * 1000
        nbins = 1 << (-(-int(ring_s * 1e9) // bin_ns) - 1).bit_length()  # a power of two: slot = idx & mask
        return cls(bin_ns, nbins, lanes_for(ncpu or os.cpu_count() or 1), 2 * n_ifaces)

    @property
    def nbytes(self) -> int:
        return self.nrings * self.nlanes * self.nbins * SLOT_DTYPE.itemsize


@dataclass(slots=True, frozen=True)
class HotFlow:
    """One flow's byte-sampled share of hot bins in one 10 ms group (bytes are an estimate; packets = samples)."""

    ring: int
    group: int
    proto: int  # IP protocol number (6 tcp, 17 udp, ...); 0 for non-IP
    src: str
    dst: str
    sport: int
    dport: int
    bytes: int
    packets: int


class _IfaceT(ctypes.Structure):
    _fields_ = [("ring", ctypes.c_uint32), ("l2_len", ctypes.c_uint32), ("hot_bytes", ctypes.c_uint64),
                ("sample_bytes", ctypes.c_uint64)]


def _addr(ethertype: int, raw: bytes) -> str:
    if ethertype == 0x0800:
        return str(ipaddress.IPv4Address(raw[:4]))
    if ethertype == 0x86DD:
        return str(ipaddress.IPv6Address(raw[:16]))
    return ""


class TcPrograms:
    """The compiled tc programs, their mmapped rings and the hot-flow table."""

    def __init__(self, layout: RingLayout, max_flows: int = 16384) -> None:
        self.layout = layout
        self.max_flows = max_flows
        self.group_bins = max(1, GROUP_NS // layout.bin_ns)
        self._bpf: Any = None
        self._mmap: mmap.mmap | None = None
        self.rings: BinRings | None = None
        self.fds: dict[str, int] = {}

    def source(self) -> str:
        """The generated C text (for debugging: `agent probes --ebpf net`)."""
        lay = self.layout
        return bpf_compiler.render_source(C_SOURCE, {
            "BIN_NS": f"{lay.bin_ns}ULL", "NBINS": lay.nbins, "NLANES": lay.nlanes, "NRINGS": lay.nrings,
            "GROUP_BINS": self.group_bins, "MAX_FLOWS": self.max_flows, "MAX_IFACES": max(1, lay.nrings // 2),
        })

    def load(self) -> None:
        """Compile and load; raises ProbeUnavailable with the reason."""
        bcc = bpf_host.import_bcc()
        self._bpf = bpf_compiler.compile_bpf(self.source())
        for direction in DIRECTIONS:
            self.fds[direction] = self._bpf.load_func(f"gs_net_{direction}", bcc.BPF.SCHED_CLS).fd
        fd = self._bpf["bins"].map_fd
        self._mmap = mmap.mmap(fd, _page_round(self.layout.nbytes), mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE)
        lay = self.layout
        count = lay.nrings * lay.nlanes * lay.nbins
        slots = np.frombuffer(self._mmap, dtype=SLOT_DTYPE, count=count).reshape(lay.nrings, lay.nlanes, lay.nbins)
        self.rings = BinRings(slots, lay.bin_ns, GUARD_NS)

    def set_iface(self, ifindex: int, slot: int, l2_len: int, threshold_bytes: int) -> None:
        """Count `ifindex` into rings 2*slot (ingress) and 2*slot+1 (egress)."""
        hot = max(1, threshold_bytes // self.layout.nlanes)  # each lane sees its share of the bin
        step = max(64, hot // SAMPLES_PER_HOT_BIN)
        self._bpf["ifaces"][ctypes.c_uint32(ifindex)] = _IfaceT(2 * slot, l2_len, hot, step)

    def drain(self, ring: int, now_ns: int) -> Drained:
        return self.rings.drain(ring, now_ns)

    def take_flows(self) -> list[HotFlow]:
        """Read and clear the hot-flow table."""
        out = []
        for k, v in bpf_maps.drain(self._bpf["hot_flows"]):
            src, dst = bytes(k.saddr), bytes(k.daddr)
            out.append(HotFlow(k.ring, k.group, k.proto if k.ethertype in (0x0800, 0x86DD) else 0,
                               _addr(k.ethertype, src), _addr(k.ethertype, dst), k.sport, k.dport,
                               v.bytes, v.packets))
        return out

    def stats(self) -> KernelStats:
        vals = [v.value for _, v in self._bpf["stats"].items()]
        return KernelStats(overrun_writes=vals[0], hot_flows_lost=vals[1])

    def close(self) -> None:
        if self.rings is not None:
            self.rings = None  # drop numpy views before unmapping
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a view is still alive somewhere; the mapping goes when it does
            self._mmap = None
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None


def _page_round(n: int) -> int:
    page = mmap.PAGESIZE
    return -(-n // page) * page
