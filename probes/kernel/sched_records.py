"""The sched probe's kernel records (sched.c and its parts) as Events: runq_delay with its culprits, offcpu with its
state and waker, direct_reclaim, softirq. The record types come from bcc (table.event()), not from mirrors here."""
from __future__ import annotations

import ctypes
from typing import Any

from gpusleuth.probes.bpf.maps import comm_str
from gpusleuth.probes.records import Event

SOURCE = "sched"
TOP_CULPRITS = 3
# sched_switch prev_state bits (TASK_REPORT order), and ours for a frozen task (sched_offcpu.h S_FROZEN)
STATE_BITS = ((0x10000, "frozen"), (0x4, "T"), (0x8, "t"), (0x2, "D"), (0x1, "S"), (0x40, "P"), (0x80, "I"),
              (0x10, "X"), (0x20, "Z"))
# include/linux/interrupt.h softirq numbers
SOFTIRQ_NAMES = ("HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU")


def state_name(bits: int) -> str:
    """The one-letter task state (ps's letters) of a prev_state value, "frozen" for ours, "R" for none."""
    for bit, name in STATE_BITS:
        if bits & bit:
            return name
    return "R"


def culprits_of(rec: Any, top: int = TOP_CULPRITS) -> list[dict[str, Any]]:
    """The record's culprit table, heaviest first, the first `top` of them (the idle task is never in it)."""
    # read the flat comm array from memory: ctypes would cut a char array's value at its first NUL
    field = type(rec).c_comm
    comms = ctypes.string_at(ctypes.addressof(rec) + field.offset, field.size)
    width = len(comms) // len(rec.c_tid)
    found = [j for j in range(len(rec.c_tid)) if rec.c_tid[j] and rec.c_ns[j]]
    found.sort(key=lambda j: rec.c_ns[j], reverse=True)
    return [{"pid": rec.c_tgid[j], "tid": rec.c_tid[j], "comm": comm_str(comms[j * width:(j + 1) * width]),
             "ns": rec.c_ns[j]} for j in found[:top]]


def runq_delay(rec: Any) -> Event:
    """A watched thread waited at least slow_runq_ms to run; who ran on its CPU meanwhile."""
    attrs: dict[str, Any] = {"prev_pid": rec.prev_pid, "prev_comm": comm_str(bytes(rec.prev_comm)), "cpu": rec.cpu}
    if rec.has_culprits:
        attrs.update(culprits=culprits_of(rec), idle_ns=rec.idle_ns, other_ns=rec.other_ns)
    else:
        attrs.update(culprits=[], culprits_lost=True)
    return Event(kind="runq_delay", source=SOURCE, start_ns=rec.start_ns, end_ns=rec.start_ns + rec.dur_ns,
                 pid=rec.tgid, tid=rec.tid, comm=comm_str(bytes(rec.comm)), attrs=attrs)


def offcpu(rec: Any) -> Event:
    """A watched thread off the CPU from leaving it to its wakeup, in `state`; who woke it where seen."""
    attrs: dict[str, Any] = {"state": state_name(rec.state), "cpu": rec.cpu, "is_hot": bool(rec.is_hot)}
    if rec.waker_tid:
        attrs.update(waker_pid=rec.waker_tgid, waker_tid=rec.waker_tid, waker_comm=comm_str(bytes(rec.waker_comm)))
    return Event(kind="offcpu", source=SOURCE, start_ns=rec.start_ns, end_ns=rec.start_ns + rec.dur_ns,
                 pid=rec.tgid, tid=rec.tid, comm=comm_str(bytes(rec.comm)), attrs=attrs)


def direct_reclaim(rec: Any) -> Event:
    """A watched thread reclaimed memory itself: the system's (scope "global") or its cgroup's ("memcg")."""
    return Event(kind="direct_reclaim", source=SOURCE, start_ns=rec.start_ns, end_ns=rec.start_ns + rec.dur_ns,
                 pid=rec.tgid, tid=rec.tid, comm=comm_str(bytes(rec.comm)),
                 attrs={"nr_reclaimed": rec.nr_reclaimed, "scope": "memcg" if rec.is_memcg else "global"})


def softirq(rec: Any, window_ns: int) -> Event:
    """A CPU spent at least probes.sched.softirq_pct % of consecutive windows in softirq + hardirq."""
    vec = SOFTIRQ_NAMES[rec.vec] if rec.vec < len(SOFTIRQ_NAMES) else str(rec.vec)
    ns = rec.hard_ns + rec.soft_ns
    return Event(kind="softirq", source=SOURCE, start_ns=rec.start_ns, end_ns=rec.start_ns + rec.dur_ns,
                 attrs={"cpu": rec.cpu, "ns": ns, "vector": vec, "vector_ns": rec.vec_ns, "softirq_ns": rec.soft_ns,
                        "hardirq_ns": rec.hard_ns, "windows": rec.windows, "window_ns": window_ns,
                        "share": round(ns / max(rec.dur_ns, 1), 3)})
