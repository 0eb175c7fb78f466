"""Scheduler probe: run-queue latency per watched process and off-CPU / run-queue time per thread.

From sched tracepoints only (sched_wakeup, sched_wakeup_new, sched_switch, sched_process_exit, task_newtask): a
thread's run-queue latency is the time from becoming runnable (woken, or preempted while runnable) to running; its
off-CPU time is the time spent blocked. Delays above `slow_runq_ms` become Events naming the task that ran before.

The snapshot (`store.snapshot("sched")`) is a kernel/snapshot.py SchedSnapshot.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpusleuth.probes.config import check_range
from gpusleuth.probes.bpf import maps as bpf_maps
from gpusleuth.probes.base import PollResult, ProbeState
from gpusleuth.probes.bpf.probe import BccProbe
from gpusleuth.probes.bpf.log2_hist import Log2Hist
from gpusleuth.probes.kernel.proc_info import is_alive, threads_of
from gpusleuth.probes.kernel.snapshot import SchedProcess, SchedSnapshot, ThreadTimes
from gpusleuth.probes.records import Event, Sample



@dataclass(slots=True)
class SchedConfig:
    interval_s: float = 1.0
    slow_runq_ms: float = 5.0  # run-queue waits at least this long become Events
    max_threads: int = 65536
    idle_expiry_s: float = 600.0
    max_events_per_poll: int = 10000  # beyond this, events wait in the kernel buffer or are dropped and counted

    def __post_init__(self) -> None:
        check_range("interval_s", self.interval_s, 0.05, 3600)
        check_range("slow_runq_ms", self.slow_runq_ms, 0.01, 60_000)
        check_range("max_threads", self.max_threads, 1024, 4_194_304)
        check_range("idle_expiry_s", self.idle_expiry_s, 1, 86400 * 7)
        check_range("max_events_per_poll", self.max_events_per_poll, 100, 10_000_000)


@dataclass(slots=True)
class _ThreadTotals:
    pid: int
    runq_ns: int = 0
    offcpu_ns: int = 0
    switches: int = 0
    last_change_ns: int = 0


class SchedProbe(BccProbe):
    name = "sched"
    config_class = SchedConfig
    C_SOURCE = Path(__file__).with_name("sched.c")
    TRACEPOINTS = [("sched", "sched_wakeup"), ("sched", "sched_wakeup_new"), ("sched", "sched_switch"),
                   ("sched", "sched_process_exit"), ("task", "task_newtask")]
    EVENT_TABLE = "delays"

    def __init__(self, config: SchedConfig) -> None:
        super().__init__(config)
        self._hists: dict[int, Log2Hist] = {}
        self._threads: dict[int, _ThreadTotals] = {}
        self._delays_total = 0

    def defines(self) -> dict[str, int]:
        return {"SLOW_RUNQ_NS": int(self.config.slow_runq_ms * 1e6), "MAX_THREADS": self.config.max_threads}

    def describe_path(self) -> str:
        return "sched tracepoints, kernel histograms"

    def make_event(self, d: Any) -> Event:
        return Event(kind="runq_delay", source=self.name, start_ns=d.start_ns, end_ns=d.start_ns + d.dur_ns,
                     pid=d.tgid, tid=d.tid, comm=bpf_maps.comm_str(bytes(d.comm)),
                     attrs={"prev_pid": d.prev_pid, "prev_comm": bpf_maps.comm_str(bytes(d.prev_comm))})

    def push_watch(self) -> None:
        """Watched tgids into the kernel, and their existing threads (new ones are caught by task_newtask)."""
        super().push_watch()
        threads = self._bpf["threads"]
        for tgid in self._watch.tgids:
            for tid in threads_of(tgid):
                threads[ctypes.c_uint32(tid)] = ctypes.c_uint32(tgid)

    def poll(self, now_ns: int) -> PollResult:
        events, drained, lost = self.read_kernel(["hist", "thread_stats"])
        self._delays_total += len(events)
        samples = self._accumulate(drained["hist"], drained["thread_stats"], now_ns)
        self._expire(now_ns)
        if lost[0] or lost[1]:
            self.set_status(ProbeState.DEGRADED, f"overloaded: {lost[0]} keys and {lost[1]} run-queue delay events "
                            "lost; raise probes.sched.slow_runq_ms or narrow [watch]")
        return PollResult(samples=samples, events=events, snapshot=self._snapshot(now_ns, lost))

    def _accumulate(self, hist_items, thread_items, now_ns: int) -> list[Sample]:
        per_tgid: dict[int, list[int]] = {}
        for key, val in hist_items:
            hist = self._hists.setdefault(key.tgid, Log2Hist())
            hist.add(key.slot, val.count, val.sum_ns, now_ns)
            acc = per_tgid.setdefault(key.tgid, [0, 0])
            acc[0] += val.count
            acc[1] += val.sum_ns
        for key, val in thread_items:
            tid = getattr(key, "value", key)  # batch reads give plain ints for scalar keys
            t = self._threads.get(tid)
            if t is None or t.pid != val.tgid:
                t = self._threads[tid] = _ThreadTotals(pid=val.tgid)
            t.runq_ns += val.runq_ns
            t.offcpu_ns += val.offcpu_ns
            t.switches += val.switches
            t.last_change_ns = now_ns
        samples = []
        for tgid, (count, sum_ns) in per_tgid.items():
            labels = {"pid": str(tgid), "comm": self._comms.get(tgid)}
            samples.append(Sample("runq.count", now_ns, float(count), labels))
            samples.append(Sample("runq.seconds", now_ns, sum_ns / 1e9, labels))
        return samples

    def _expire(self, now_ns: int) -> None:
        horizon = now_ns - int(self.config.idle_expiry_s * 1e9)
        for tgid in [k for k, h in self._hists.items() if h.last_change_ns < horizon and not is_alive(k)]:
            del self._hists[tgid]
        for tid in [k for k, t in self._threads.items() if t.last_change_ns < horizon and not is_alive(k)]:
            del self._threads[tid]

    def _snapshot(self, now_ns: int, lost: list[int]) -> SchedSnapshot:
        processes = {tgid: SchedProcess(self._comms.get(tgid), h.snapshot()) for tgid, h in self._hists.items()}
        threads = {tid: ThreadTimes(t.pid, self._comms.get(tid), t.runq_ns, t.offcpu_ns, t.switches)
                   for tid, t in self._threads.items()}
        return SchedSnapshot(t_ns=now_ns, interval_s=self.config.interval_s, filter=self.filter_name,
                             processes=processes, threads=threads, runq_delays_total=self._delays_total,
                             lost_keys=lost[0], lost_events=lost[1])
