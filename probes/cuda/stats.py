"""Per-process figures of the cuda probe, built from what each poll reads: the kernel's aggregates (calls per
function, direction, duration bucket and communicator), its per-thread launch counters, and the sync records that
close each host step."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gpusleuth.probes.bpf.log2_hist import Log2Hist
from gpusleuth.probes.cuda.decode import CollectiveCall, SyncCall
from gpusleuth.probes.cuda.snapshot import CallStats, CollectiveStats, CudaProcess, CudaThread, HostStep
from gpusleuth.probes.cuda.symbols import ALL_FUNCTIONS, NO_ARG, Direction, Family

DIRECTIONS = {d.value: d.name.lower() for d in Direction}


@dataclass(slots=True)
class _Acc:
    count: int = 0
    bytes: int = 0
    failures: int = 0
    hist: Log2Hist = field(default_factory=Log2Hist)

    def add(self, slot: int, count: int, sum_ns: int, nbytes: int, failures: int, now_ns: int) -> None:
        self.count += count
        self.bytes += nbytes
        self.failures += failures
        self.hist.add(slot, count, sum_ns, now_ns)

    def snapshot(self) -> CallStats:
        return CallStats(self.count, self.bytes, self.failures, self.hist.snapshot())


@dataclass(slots=True)
class _Thread:
    launches: int = 0
    graphs: int = 0
    steps: deque = field(default_factory=deque)


@dataclass(slots=True)
class _Collective:
    library: str
    handle: int
    op: str
    acc: _Acc = field(default_factory=_Acc)


class ProcessStats:
    """Everything the probe knows about one process's GPU calls, cumulative since it was first seen."""

    def __init__(self, recent_steps: int, gpu_bound_share: float) -> None:
        self.syncs: dict[str, _Acc] = {}
        self.copies: dict[str, _Acc] = {}
        self.sync_copies: dict[str, list[int]] = {}  # direction -> [bytes, ns] of copies with no stream argument
        self.allocs, self.frees, self.groups = _Acc(), _Acc(), _Acc()
        self.collectives: dict[tuple[str, int, str], _Collective] = {}
        self.threads: dict[int, _Thread] = {}
        self.gone_launches = self.gone_graphs = 0  # counts of threads that have exited
        self.host_steps = {"cpu": 0, "gpu": 0}
        self.sync_wait_ns = self.host_step_ns = 0
        self.idle_gaps = Log2Hist()
        self.last_change_ns = 0
        self.launch_rate = 0.0
        self._prev_launches: tuple[int, int] | None = None  # (total, t_ns) at the previous poll
        self._recent = recent_steps
        self._share = gpu_bound_share

    @property
    def launches(self) -> int:
        return self.gone_launches + sum(t.launches for t in self.threads.values())

    @property
    def graph_launches(self) -> int:
        return self.gone_graphs + sum(t.graphs for t in self.threads.values())

    def add_aggregate(self, fn_id: int, direction: int, slot: int, value: Any, now_ns: int) -> None:
        """One read-and-cleared kernel aggregate (count, bytes, sum_ns, failures) of this process."""
        fn = ALL_FUNCTIONS[fn_id]
        args = (slot, value.count, value.sum_ns, value.bytes, value.failures, now_ns)
        self.last_change_ns = now_ns
        if fn.family is Family.SYNC:
            self.syncs.setdefault(fn.call, _Acc()).add(*args)
        elif fn.family is Family.COPY:
            name = DIRECTIONS.get(direction, "default")
            self.copies.setdefault(name, _Acc()).add(*args)
            if fn.handle == NO_ARG:  # synchronous: the call lasts as long as the copy
                acc = self.sync_copies.setdefault(name, [0, 0])
                acc[0] += value.bytes
                acc[1] += value.sum_ns
        elif fn.family is Family.ALLOC:
            self.allocs.add(*args)
        elif fn.family is Family.FREE:
            self.frees.add(*args)
        elif fn.family is Family.GROUP:
            self.groups.add(*args)

    def add_collective_aggregate(self, fn_id: int, handle: int, slot: int, value: Any, now_ns: int) -> None:
        fn = ALL_FUNCTIONS[fn_id]
        key = (fn.lib, handle, fn.call)
        coll = self.collectives.setdefault(key, _Collective(*key))
        coll.acc.add(slot, value.count, value.sum_ns, value.bytes, value.failures, now_ns)

    def add_gloo_call(self, call: CollectiveCall, now_ns: int) -> None:
        """gloo calls are counted in user space (their record is the only trace the kernel keeps of them)."""
        key = ("gloo", call.handle, call.fn.call)
        self.collectives.setdefault(key, _Collective(*key)).acc.add(0, 1, 0, 0, 0, now_ns)

    def set_thread_counts(self, tid: int, launches: int, graphs: int) -> None:
        t = self.threads.setdefault(tid, _Thread(steps=deque(maxlen=self._recent)))
        t.launches, t.graphs = launches, graphs

    def thread_gone(self, tid: int, launches: int, graphs: int) -> None:
        """A thread exited; `launches` and `graphs` are its final counts (from the kernel's thread table)."""
        self.threads.pop(tid, None)
        self.gone_launches += launches
        self.gone_graphs += graphs

    def add_sync(self, call: SyncCall) -> HostStep | None:
        """The host step this sync closes (None for a thread's first sync: its start is unknown)."""
        t = self.threads.setdefault(call.tid, _Thread(steps=deque(maxlen=self._recent)))
        host_ns = call.host_ns
        if host_ns is None or host_ns <= 0:
            return None
        gap = call.idle_gap_ns
        bound = "gpu" if call.wait_ns >= self._share * host_ns else "cpu"
        step = HostStep(call.end_ns, host_ns, call.wait_ns, -1 if gap is None else gap, call.launches, call.graphs,
                        call.copy_bytes, bound)
        t.steps.append(step)
        self.host_steps[bound] += 1
        self.sync_wait_ns += call.wait_ns
        self.host_step_ns += host_ns
        if gap is not None:
            self.idle_gaps.add(max(gap, 1).bit_length(), 1, gap, call.end_ns)
        return step

    def update_rate(self, now_ns: int) -> None:
        total = self.launches
        if self._prev_launches is not None and now_ns > self._prev_launches[1]:
            self.launch_rate = (total - self._prev_launches[0]) * 1e9 / (now_ns - self._prev_launches[1])
        self._prev_launches = (total, now_ns)

    def snapshot(self, proc: CudaProcess, pid: int, groups_of: dict[tuple[int, str, int], tuple[str, int]],
                 comms: dict[int, str]) -> CudaProcess:
        """Fill `proc` (libraries already set) with this process's figures. `groups_of` maps (pid, library,
        handle) to (group key, rank); `comms` names threads."""
        proc.launches, proc.graph_launches, proc.launch_rate = self.launches, self.graph_launches, self.launch_rate
        proc.syncs = {k: a.snapshot() for k, a in self.syncs.items()}
        proc.copies = {k: a.snapshot() for k, a in self.copies.items()}
        proc.copy_bandwidth = {k: b * 1e9 / ns for k, (b, ns) in self.sync_copies.items() if ns > 0}
        proc.allocs, proc.frees, proc.groups = self.allocs.snapshot(), self.frees.snapshot(), self.groups.snapshot()
        proc.live_alloc_bytes = self.allocs.bytes - self.frees.bytes
        proc.collectives = [CollectiveStats(c.library, *groups_of.get((pid, c.library, c.handle), ("", -1)), c.op,
                                            c.acc.snapshot()) for c in self.collectives.values()]
        proc.host_steps = dict(self.host_steps)
        proc.sync_wait_ns, proc.host_step_ns = self.sync_wait_ns, self.host_step_ns
        proc.idle_gaps = self.idle_gaps.snapshot()
        proc.threads = {tid: CudaThread(comms.get(tid, ""), t.launches, t.graphs, list(t.steps))
                        for tid, t in self.threads.items()}
        return proc
