"""Syscall probe: per-(process, syscall) log2 latency histograms and slow-syscall Events (raw_syscalls tracepoints).

Histograms are aggregated in the kernel and read-and-cleared every `interval_s`; only syscalls slower than
`slow_threshold_ms` cross to user space one by one (ring buffer). With a watch filter, unwatched processes cost
one hash lookup per syscall entry.

The snapshot (`store.snapshot("syscalls")`) is a kernel/snapshot.py SyscallSnapshot.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpusleuth.probes.config import check_choice, check_range
from gpusleuth.probes.bpf import host as bpf_host
from gpusleuth.probes.bpf import maps as bpf_maps
from gpusleuth.probes.base import PollResult, ProbeUnavailable
from gpusleuth.probes.bpf.probe import BccProbe
from gpusleuth.probes.bpf.log2_hist import Log2Hist
from gpusleuth.probes.kernel.proc_info import EXITED_COMM, is_alive
from gpusleuth.probes.kernel.snapshot import SyscallProcess, SyscallSnapshot
from gpusleuth.probes.records import Event, Sample
from gpusleuth.probes.kernel.syscall_table import syscall_name



@dataclass(slots=True)
class SyscallConfig:
    interval_s: float = 1.0
    slow_threshold_ms: float = 10.0
    max_threads: int = 65536  # in-flight syscalls tracked at once (LRU)
    max_keys: int = 65536  # distinct (process, syscall, bucket) keys per interval
    max_events_per_poll: int = 50000  # a memory bound: beyond it (or 20 % of the interval) events wait in the buffer
    thread_state: str = "auto"  # where a thread's syscall start lives: "task" (task storage), "hash", "auto"
    is_percpu: bool = True  # per-CPU histogram maps: no atomics on the hot path

    def __post_init__(self) -> None:
        check_range("interval_s", self.interval_s, 0.05, 3600)
        check_range("slow_threshold_ms", self.slow_threshold_ms, 0, 3_600_000)  # 0: every syscall (debug)
        check_range("max_threads", self.max_threads, 1024, 4_194_304)
        check_range("max_keys", self.max_keys, 1024, 4_194_304)
        check_range("max_events_per_poll", self.max_events_per_poll, 100, 10_000_000)
        check_choice("thread_state", self.thread_state, ["auto", "task", "hash"])


class SyscallProbe(BccProbe):
    name = "syscalls"
    config_class = SyscallConfig
    C_SOURCE = Path(__file__).with_name("syscalls.c")
    TRACEPOINTS = [("raw_syscalls", "sys_enter"), ("raw_syscalls", "sys_exit")]
    EVENT_TABLE = "slow_events"
    EVENT_PAGES = 64

    def __init__(self, config: SyscallConfig) -> None:
        super().__init__(config)
        self._hists: dict[tuple[int, int], Log2Hist] = {}
        self._nrs: dict[int, set[int]] = {}  # tgid -> its syscalls in _hists
        self._gone: set[int] = set()  # processes found gone at the last poll: folded into _exited at this one
        self._exited: dict[tuple[str, int], Log2Hist] = {}  # (comm, nr) -> totals of exited processes
        self._slow_total = 0
        self._use_task_storage = config.thread_state != "hash"

    def defines(self) -> dict[str, int]:
        return {"SLOW_NS": int(self.config.slow_threshold_ms * 1e6), "MAX_THREADS": self.config.max_threads,
                "MAX_KEYS": self.config.max_keys, "USE_TASK_STORAGE": int(self._use_task_storage),
                "PERCPU_HIST": int(self.config.is_percpu)}

    def compile(self) -> None:
        self._use_task_storage = self.config.thread_state == "task" or (
            self.config.thread_state == "auto" and bpf_host.has_kernel_btf())
        try:
            super().compile()
        except ProbeUnavailable:
            if self.config.thread_state != "auto" or not self._use_task_storage:
                raise
            self._use_task_storage = False  # task storage refused (old kernel): per-thread hash instead
            super().compile()

    def describe_path(self) -> str:
        state = "task storage" if self._use_task_storage else "thread hash"
        return f"raw_syscalls tracepoints, kernel histograms, {state}"

    def push_watch(self) -> None:
        super().push_watch()
        bpf_maps.set_members(self._bpf["watched_cgroups"], self._watch.cgroup_ids, ctypes.c_uint64)

    def make_event(self, e: Any) -> Event:
        return Event(kind="slow_syscall", source=self.name, start_ns=e.start_ns, end_ns=e.start_ns + e.dur_ns,
                     pid=e.tgid, tid=e.tid, comm=bpf_maps.comm_str(bytes(e.comm)),
                     attrs={"syscall": syscall_name(e.nr), "nr": e.nr})

    def poll(self, now_ns: int) -> PollResult:
        events, drained, lost = self.read_kernel(["hist"])
        self._slow_total += len(events)
        samples = self._accumulate(drained["hist"], now_ns)
        self._expire(now_ns)
        self.update_health(lost, now_ns, "raise probes.syscalls.slow_threshold_ms or max_keys, or narrow [watch]")
        return PollResult(samples=samples, events=events, snapshot=self._snapshot(now_ns, lost))

    def _accumulate(self, items, now_ns: int) -> list[Sample]:
        interval: dict[tuple[int, int], list[int]] = {}
        for key, val in items:
            val = bpf_maps.sum_percpu(val)
            hist = self._hists.get((key.tgid, key.nr))
            if hist is None:
                hist = self._hists[(key.tgid, key.nr)] = Log2Hist()
                self._nrs.setdefault(key.tgid, set()).add(key.nr)
            hist.add(key.slot, val.count, val.sum_ns, now_ns)
            acc = interval.setdefault((key.tgid, key.nr), [0, 0])
            acc[0] += val.count
            acc[1] += val.sum_ns
        samples = []
        for (tgid, nr), (count, sum_ns) in interval.items():
            labels = {"pid": str(tgid), "comm": self._comms.get(tgid, EXITED_COMM), "syscall": syscall_name(nr)}
            samples.append(Sample("syscall.count", now_ns, float(count), labels))
            samples.append(Sample("syscall.seconds", now_ns, sum_ns / 1e9, labels))
        return samples

    def _expire(self, now_ns: int) -> None:
        """A process found gone is published one last poll under its pid (its final counts), then folded into
        its comm's `exited` totals, so the per-pid series leave while sums by comm stay continuous."""
        for tgid in self._gone:
            for nr in self._nrs.pop(tgid, ()):
                hist = self._hists.pop((tgid, nr))
                self._exited.setdefault((self._comms.get(tgid, EXITED_COMM), nr), Log2Hist()).merge(hist)
            self._comms.forget(tgid)
        self._gone = {tgid for tgid in self._nrs if not is_alive(tgid)}

    def _snapshot(self, now_ns: int, lost: list[int]) -> SyscallSnapshot:
        processes: dict[int, SyscallProcess] = {}
        for (tgid, nr), hist in self._hists.items():
            proc = processes.get(tgid)
            if proc is None:
                proc = processes[tgid] = SyscallProcess(self._comms.get(tgid, EXITED_COMM))
            proc.syscalls[syscall_name(nr)] = hist.snapshot()
        exited: dict[str, SyscallProcess] = {}
        for (comm, nr), hist in self._exited.items():
            exited.setdefault(comm, SyscallProcess(comm)).syscalls[syscall_name(nr)] = hist.snapshot()
        return SyscallSnapshot(t_ns=now_ns, interval_s=self.config.interval_s, filter=self.filter_name,
                               watched_tgids=len(self._watch.tgids), processes=processes,
                               exited=exited, slow_events_total=self._slow_total, lost_keys=lost[0], lost_events=lost[1])
