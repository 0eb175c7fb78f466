"""qdisc backlog and drops per interface from netlink statistics (pyroute2), read each poll.

The root qdisc's counters are the interface totals (multi-queue roots such as mq sum their children when dumped);
every qdisc is also listed. clsact/ingress carry no queue and are skipped.
"""
from __future__ import annotations

from typing import Any

from gpusleuth.probes.net.snapshot import QdiscEntry, RootQdisc

TC_H_ROOT = 0xFFFFFFFF
_NO_QUEUE = ("clsact", "ingress")
_COUNTERS = ("backlog_bytes", "qlen", "drops", "requeues", "overlimits", "bytes", "packets")


def _handle(h: int) -> str:
    return "root" if h == TC_H_ROOT else f"{h >> 16:x}:{h & 0xFFFF:x}"


def _counters(msg: Any) -> dict[str, int]:
    out = dict.fromkeys(_COUNTERS, 0)
    stats2 = msg.get_attr("TCA_STATS2")
    if stats2 is not None:
        queue = stats2.get_attr("TCA_STATS_QUEUE") or {}
        basic = stats2.get_attr("TCA_STATS_BASIC") or {}
        out.update(backlog_bytes=queue.get("backlog", 0), qlen=queue.get("qlen", 0), drops=queue.get("drops", 0),
                   requeues=queue.get("requeues", 0), overlimits=queue.get("overlimits", 0),
                   bytes=basic.get("bytes", 0), packets=basic.get("packets", 0))
        return out
    legacy = msg.get_attr("TCA_STATS") or {}  # kernels/pyroute2 without STATS2
    out.update(backlog_bytes=legacy.get("backlog", 0), qlen=legacy.get("qlen", 0), drops=legacy.get("drop", 0),
               overlimits=legacy.get("overlimits", 0), bytes=legacy.get("bytes", 0),
               packets=legacy.get("packets", 0))
    return out


def read_qdiscs(ipr: Any, index: int) -> RootQdisc | None:
    """Root totals plus every queueing qdisc of interface `index`; None if it has no root qdisc."""
    listed: list[QdiscEntry] = []
    root = None
    for msg in ipr.get_qdiscs(index=index):
        kind = msg.get_attr("TCA_KIND")
        if kind in _NO_QUEUE:
            continue
        entry = QdiscEntry(kind, _handle(msg["handle"]), **_counters(msg), parent=_handle(msg["parent"]))
        listed.append(entry)
        if msg["parent"] == TC_H_ROOT:
            root = entry
    if root is None:
        return None
    counters = {k: getattr(root, k) for k in _COUNTERS}
    return RootQdisc(root.kind, root.handle, **counters, qdiscs=listed)
