"""Shared by blocking_io and memory_reclaim: which uninterruptible (D) waits of a thread were page faults.

A D-state wait of a thread with no slow syscall around it, while its process's major-fault count grew, is a fault
waiting for its page (memory_reclaim's evidence); one inside a syscall is that syscall's I/O (blocking_io's).
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.context import Context
from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS
from gpusleuth.probes.records import Event

FAULT_SERIES = "mm.faults"
POLL_SLACK_NS = 1_500_000_000


def major_faults(ctx: Context, pid: int, lo: int, hi: int) -> float:
    """Major faults of `pid` counted in polls that ended within [lo, hi + slack]."""
    got = ctx.samples.series(FAULT_SERIES, lo, hi + POLL_SLACK_NS, pid=str(pid), kind="major")
    return sum(v for _, points in got for _, v in points)


def syscall_around(ctx: Context, e: Event) -> Event | None:
    """The slow non-wait syscall of the same thread that contains the D wait, if the syscall probe saw one."""
    for s in ctx.events("slow_syscall", e.start_ns, e.end_ns, e.pid):
        if s.tid == e.tid and s.attrs.get("syscall") not in WAIT_SYSCALLS:
            return s
    return None


def is_fault_wait(ctx: Context, e: Event) -> bool:
    """A D wait that is a page fault rather than a syscall's I/O."""
    if str(e.attrs.get("state")) != "D" or syscall_around(ctx, e) is not None:
        return False
    return major_faults(ctx, e.pid, e.start_ns, e.end_ns) > 0
