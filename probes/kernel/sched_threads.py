"""What the sched probe keeps per thread and process between polls: cumulative times from the kernel's read-and-clear
deltas, page-fault counts per process, and the threads stuck at poll time (the snapshot's `ongoing`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from gpusleuth.probes.kernel.proc_info import fault_counts
from gpusleuth.probes.kernel.sched_records import state_name
from gpusleuth.probes.kernel.snapshot import OngoingState, ThreadTimes
from gpusleuth.probes.records import Sample

FROZEN_MATCH_NS = 1_000_000  # the raw and the plain sched_switch tracepoint of one switch run this close
STUCK_STATES = ("T", "t", "D", "frozen")


@dataclass(slots=True)
class ThreadTotals:
    pid: int
    runq_ns: int = 0
    offcpu_ns: int = 0
    switches: int = 0
    faults: int = 0
    reclaim_ns: int = 0
    cpu: int = -1
    last_change_ns: int = 0

    def add(self, val: Any, now_ns: int) -> None:
        """Add one thread_stats delta (sched.c struct thread_t)."""
        self.runq_ns += val.runq_ns
        self.offcpu_ns += val.offcpu_ns
        self.switches += val.switches
        self.faults += val.faults
        self.reclaim_ns += val.reclaim_ns
        if val.switches:
            self.cpu = val.cpu
        self.last_change_ns = now_ns

    def times(self, comm: str, is_hot: bool) -> ThreadTimes:
        return ThreadTimes(self.pid, comm, self.runq_ns, self.offcpu_ns, self.switches, self.faults,
                           self.reclaim_ns, self.cpu, is_hot)


class FaultCounter:
    """Major / minor page faults per watched process per poll, from /proc/PID/stat (the tracepoint cannot split
    them): Samples `mm.faults{pid, comm, kind}`, the increase since the previous poll."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[int, int]] = {}

    def poll(self, comms: dict[int, str], now_ns: int) -> list[Sample]:
        samples, seen = [], {}
        for pid, comm in comms.items():
            counts = fault_counts(pid)
            if counts is None:
                continue
            seen[pid] = counts
            old = self._last.get(pid)
            if old is None:
                continue  # a baseline
            for kind, value in (("minor", counts[0] - old[0]), ("major", counts[1] - old[1])):
                samples.append(Sample("mm.faults", now_ns, float(value), {"pid": str(pid), "comm": comm,
                                                                           "kind": kind}))
        self._last = seen
        return samples


def ongoing_states(blocked: Iterable[tuple[Any, Any]], enqueued: Iterable[tuple[Any, Any]],
                   frozen_at: dict[int, int], frozen_pids: set[int], now_ns: int, min_ns: int,
                   comm_of: Callable[[int], str]) -> list[OngoingState]:
    """Watched threads off-CPU stopped / traced / in D / frozen, or runnable without running, for >= `min_ns`.

    `blocked`, `enqueued`: the kernel maps' (tid, value) entries (sched_offcpu.h blocked_t, sched.c enq_t);
    `frozen_at`: tid -> when it left the CPU frozen (raw tracepoint); `frozen_pids`: processes whose cgroup is
    frozen now (a v1 freeze of a sleeping thread, and any v2 freeze, leave no trace in the scheduler's states)."""
    out = []
    for key, b in blocked:
        tid = getattr(key, "value", key)
        if b.woken_ns > b.ts or now_ns - b.ts < min_ns:
            continue  # woken (its wait is in `enqueued`), or not long enough yet
        state = state_name(b.state)
        if state == "D" and abs(frozen_at.get(tid, -FROZEN_MATCH_NS * 2) - b.ts) < FROZEN_MATCH_NS:
            state = "frozen"
        elif state in ("S", "D") and b.tgid in frozen_pids:
            state = "frozen"
        if state in STUCK_STATES:
            out.append(OngoingState(tid, b.tgid, comm_of(tid), state, b.ts, b.cpu))
    for key, e in enqueued:
        tid = getattr(key, "value", key)
        if now_ns - e.ts >= min_ns:
            out.append(OngoingState(tid, e.tgid, comm_of(tid), "R", e.ts, e.cpu))
    out.sort(key=lambda o: o.since_ns)
    return out
