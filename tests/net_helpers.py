"""Test-only pieces of the network-probe tests: whether this host can run them, someone else's tc filter, and tc
listings. The namespaces, the veth pair and the traffic roles are gpusleuth.probes.net.testbed (benchmarks use
them too).
"""
from __future__ import annotations

import json
import os

from gpusleuth.probes.net.testbed import sh


def tc_available() -> str:
    """Empty string when this host can run the tc tests, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc, eBPF)"
    if sh("ip netns list", check=False).returncode != 0:
        return "iproute2 `ip netns` not usable"
    try:
        import bcc  # noqa: F401
        import pyroute2  # noqa: F401
    except ImportError as exc:
        return f"missing {exc.name}"
    return ""


# A foreign tc program (someone else's filter, or a netem-like loss injector where sch_netem is missing): counts
# every packet it sees and drops PERMYRIAD in 10000 IPv4 packets at random.
TC_PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
BPF_ARRAY(counts, u64, 2);  // 0: seen, 1: dropped
int foreign(struct __sk_buff *skb) {
    u32 k = 0;
    u64 *v = counts.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1);
    if (skb->protocol == bpf_htons(ETH_P_IP) && bpf_get_prandom_u32() % 10000 < PERMYRIAD) {
        k = 1;
        v = counts.lookup(&k);
        if (v) __sync_fetch_and_add(v, 1);
        return TC_ACT_SHOT;
    }
    return TC_ACT_UNSPEC;
}
"""


class ForeignFilter:
    """A bpf filter that is not ours, on `hook` of `ifname` in `ns` (creates clsact if absent)."""

    def __init__(self, ns: str, ifname: str, hook: str, prio: int, name: str, drop_pct: float = 0.0) -> None:
        from bcc import BPF
        from pyroute2 import IPRoute
        self.bpf = BPF(text=TC_PROGRAM.replace("PERMYRIAD", str(int(drop_pct * 100))))
        fn = self.bpf.load_func("foreign", BPF.SCHED_CLS)
        parent = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}[hook]
        with IPRoute(netns=ns) as ipr:
            index = ipr.link_lookup(ifname=ifname)[0]
            if not any(m.get_attr("TCA_KIND") == "clsact" for m in ipr.get_qdiscs(index=index)):
                ipr.tc("add", "clsact", index)
            ipr.tc("add-filter", "bpf", index, prio, fd=fn.fd, name=name, parent=parent, classid=1,
                   direct_action=True, prio=prio)

    def counts(self) -> tuple[int, int]:
        """(packets seen, packets dropped)."""
        vals = [v.value for _, v in self.bpf["counts"].items()]
        return vals[0], vals[1]

    def close(self) -> None:
        self.bpf.cleanup()


def tc_filters(ns: str, ifname: str, hook: str) -> list[dict]:
    """`tc -j filter show` entries that are filters (not the per-priority headers)."""
    out = sh(f"tc -n {ns} -j filter show dev {ifname} {hook}").stdout
    return [f for f in json.loads(out or "[]") if "options" in f]


def qdisc_kinds(ns: str, ifname: str) -> list[str]:
    return [q["kind"] for q in json.loads(sh(f"tc -n {ns} -j qdisc show dev {ifname}").stdout or "[]")]


# ---------------------------------------------------------------------------------------------- roles (in a netns)
