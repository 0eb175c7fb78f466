"""Network probe: byte/packet counts in 100 µs bins per interface and direction (tc clsact eBPF), microbursts with
their top flows and owning processes, TCP retransmits and skb drops, and qdisc backlog/drops.

Kernel side: tc.c counts every packet at the clsact ingress/egress hooks into rings of time bins (sized for
`ring_s`); each poll drains the complete bins (ring.py) and runs the burst detector (bursts.py) over them.
tcp.c aggregates retransmits and drops from tracepoints; qdisc.py reads netlink statistics.

The snapshot (`store.snapshot("net")`) is a probes/net/snapshot.py NetSnapshot.
Events: kind "net.microburst" (attrs interface, direction, bytes, packets, peak_bps, mean_bps, bins, hot_bins,
threshold_bps, is_truncated, top_flows[{proto, src, dst, bytes (sampled estimate), samples, pid, comm}]),
"net.tcp_retransmit" and "net.skb_drop" (see tcp.py).
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from gpusleuth.probes.base import PollResult, Probe, ProbeState, ProbeUnavailable, Requirement
from gpusleuth.probes.net.config import NetConfig

log = logging.getLogger(__name__)
TCP_TRACEPOINTS = [("tcp", "tcp_retransmit_skb"), ("skb", "kfree_skb"), ("sock", "inet_sock_set_state")]


class NetProbe(Probe):
    name = "net"
    config_class = NetConfig

    def __init__(self, config: NetConfig) -> None:
        super().__init__(config)
        self._lock = threading.Lock()
        self._run: Any = None  # net_run.NetRun while started

    @classmethod
    def requirements(cls) -> list[Requirement]:
        from gpusleuth.probes.bpf import host as bpf_host  # noqa: PLC0415
        reqs = bpf_host.bpf_requirements(TCP_TRACEPOINTS, need_net_admin=True)
        try:
            import pyroute2  # noqa: F401, PLC0415
            ok, detail = True, "pyroute2 importable"
        except ImportError as exc:
            ok, detail = False, str(exc)
        reqs.append(Requirement("pyroute2", ok, detail, "pip install pyroute2 (a gpusleuth dependency)"))
        # The tcp tracepoints are optional: their absence degrades the probe, it does not stop it.
        return reqs

    def source(self) -> str:
        """The generated tc program C text (for debugging)."""
        from gpusleuth.probes.net.run import NetRun  # noqa: PLC0415
        return NetRun.preview_source(self.config)

    def start(self) -> None:
        from gpusleuth.probes.bpf import host as bpf_host  # noqa: PLC0415
        from gpusleuth.probes.net.run import NetRun  # noqa: PLC0415
        essential = [r for r in self.requirements() if not r.name.startswith("tracepoint")]
        bpf_host.check_requirements(essential)
        with self._lock:
            if self._run is not None:
                return
            run = NetRun(self.config)
            try:
                run.start()
            except BaseException:
                run.stop()
                raise
            self._run = run
        state = ProbeState.DEGRADED if run.degraded_reason else ProbeState.OK
        self.set_status(state, run.degraded_reason, path=run.path, **run.status_details())

    def poll(self, now_ns: int) -> PollResult:
        with self._lock:
            if self._run is None:
                raise ProbeUnavailable("not started")
            result = self._run.poll(now_ns)
            reason = self._run.degraded_reason
        self.set_status(ProbeState.DEGRADED if reason else ProbeState.OK, reason, **self._run.status_details())
        return result

    def stop(self) -> None:
        with self._lock:
            run, self._run = self._run, None
        if run is not None:
            run.stop()
        self.set_status(ProbeState.STOPPED, "stopped")

