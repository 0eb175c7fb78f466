"""Scheduler probe: run-queue latency and who caused it, off-CPU states, memory stalls, softirq load and cgroup
throttling of the watched processes.

From tracepoints only (C beside this file: sched.c and its parts sched_culprits.h, sched_offcpu.h, sched_mm.h,
sched_irq.h). Required: sched_waking, sched_wakeup_new, sched_switch, sched_process_exit, task_newtask. Each other
part is optional; a kernel without its tracepoint runs the probe degraded, the reason naming it:
- culprits (sched_migrate_task): each `runq_delay` Event (a wait >= slow_runq_ms) names the top 3 tasks by CPU
  time they ran on the waiter's CPU during the wait, `{pid, tid, comm, ns}`, and `idle_ns` (the CPU idled while
  the thread was runnable: cgroup throttling, or a migration lag). Aggregated in the kernel: one record per slow
  wait, whatever the switch rate.
- frozen (raw tracepoint sched_switch): tells a cgroup v1 freeze from D (the plain tracepoint reports it as D).
- offcpu: `offcpu` Events for hot threads (set_hot_threads) off-CPU >= hot_offcpu_ms in any state, and for any
  watched thread stopped (T), traced (t), in D or frozen >= slow_offcpu_ms; attrs state, waker_pid/tid/comm, cpu.
  A v2 freeze (and a v1 freeze of a sleeping thread) looks like S / D to the scheduler: an event whose process's
  cgroup a poll found frozen during it says "frozen".
- faults (exceptions:page_fault_user): user faults per thread; `mm.faults{pid,comm,kind}` Samples per process per
  poll come from /proc/PID/stat (the tracepoint cannot tell major from minor).
- reclaim (vmscan direct and memcg reclaim begin/end): `direct_reclaim` Events >= min_reclaim_ms, time per thread.
- irq (irq:softirq_*, irq:irq_handler_*): `softirq` Events when a CPU spends >= softirq_pct % of consecutive
  softirq_window_ms windows in softirq + hardirq, timed while the CPU runs or queues a watched thread (softirq_cpus
  "watched": the time it steals is theirs, and elsewhere an interrupt costs one look) or always ("all").
- cgroups (probes/kernel/cgroups.py, files, no tracepoint): throttling, quota, memory pressure, freezer state.

The snapshot (`store.snapshot("sched")`) is a kernel/snapshot.py SchedSnapshot; its `ongoing` lists watched
threads stuck for >= ongoing_ms at poll time (T / t / D / frozen, or runnable without running), so a frozen
engine shows while it is still frozen.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from gpusleuth.probes.base import PollResult, ProbeState, ProbeUnavailable, Requirement
from gpusleuth.probes.bpf import host as bpf_host
from gpusleuth.probes.bpf import maps as bpf_maps
from gpusleuth.probes.bpf.log2_hist import Log2Hist
from gpusleuth.probes.bpf.probe import BccProbe
from gpusleuth.probes.config import check_choice, check_range
from gpusleuth.probes.kernel import sched_records
from gpusleuth.probes.kernel.cgroups import CgroupPoll, CgroupWatch
from gpusleuth.probes.kernel.proc_info import EXITED_COMM, is_alive, tgid_of, threads_of
from gpusleuth.probes.kernel.sched_threads import FaultCounter, ThreadTotals, ongoing_states
from gpusleuth.probes.kernel.snapshot import SchedProcess, SchedSnapshot
from gpusleuth.probes.records import Event, Sample

MAX_WAITERS = 4  # watched threads whose culprits are tracked at once per CPU
NUM_CULPRITS = 8  # tasks per wait's culprit table (the rest add up in other_ns)
CHARGE_MIN_NS = 50_000  # slices ending this early in a wait are not charged (sched_culprits.h says why)
IRQ_MAX_RUN_NS = 1_000_000_000
THREAD_SWEEP_S = 5.0  # how often threads that did not run are checked for having exited
FREEZE_STATES = ("S", "D")


@dataclass(slots=True)
class SchedConfig:
    interval_s: float = 1.0
    slow_runq_ms: float = 5.0  # run-queue waits at least this long become Events
    hot_offcpu_ms: float = 1.0  # a hot thread off-CPU this long, in any state, becomes an Event
    slow_offcpu_ms: float = 10.0  # a watched thread stopped / traced / in D / frozen this long becomes an Event
    ongoing_ms: float = 100.0  # stuck this long at poll time: listed in the snapshot's `ongoing`
    min_reclaim_ms: float = 1.0  # direct / memcg reclaims this long become Events (all count in reclaim_ns)
    softirq_pct: float = 20.0  # a window this busy in softirq + hardirq is hot
    softirq_window_ms: float = 10.0
    softirq_cpus: str = "watched"  # time interrupts on CPUs running (or queueing) a watched thread, or on "all"
    has_culprits: bool = True
    has_frozen: bool = True
    has_faults: bool = True
    has_reclaim: bool = True
    has_irq: bool = True
    has_cgroups: bool = True
    max_threads: int = 65536
    max_events_per_poll: int = 50000  # a memory bound: beyond it (or 20 % of the interval) events wait in the buffer

    def __post_init__(self) -> None:
        check_range("interval_s", self.interval_s, 0.05, 3600)
        check_range("slow_runq_ms", self.slow_runq_ms, 0.01, 60_000)
        check_range("hot_offcpu_ms", self.hot_offcpu_ms, 0.01, 60_000)
        check_range("slow_offcpu_ms", self.slow_offcpu_ms, 0.01, 60_000)
        check_range("ongoing_ms", self.ongoing_ms, 1, 3_600_000)
        check_range("min_reclaim_ms", self.min_reclaim_ms, 0, 60_000)
        check_range("softirq_pct", self.softirq_pct, 1, 100)
        check_range("softirq_window_ms", self.softirq_window_ms, 1, 1000)
        check_choice("softirq_cpus", self.softirq_cpus, ["watched", "all"])
        check_range("max_threads", self.max_threads, 1024, 4_194_304)
        check_range("max_events_per_poll", self.max_events_per_poll, 100, 10_000_000)


class SchedProbe(BccProbe):
    name = "sched"
    config_class = SchedConfig
    C_SOURCE = Path(__file__).with_name("sched.c")
    TRACEPOINTS = [("sched", "sched_waking"), ("sched", "sched_wakeup_new"), ("sched", "sched_switch"),
                   ("sched", "sched_process_exit"), ("task", "task_newtask")]
    EVENT_TABLE = "delays"
    EXTRA_EVENT_TABLES = {"offcpu": "_offcpu_event", "reclaims": "_reclaim_event", "softirqs": "_softirq_event"}
    OPTIONAL_PARTS = {
        "HAS_CULPRITS": ((("sched", "sched_migrate_task"),), "run-queue culprits"),
        "HAS_FROZEN": ((), "frozen told from D (needs raw tracepoints)"),
        "HAS_FAULTS": ((("exceptions", "page_fault_user"),), "page faults per thread"),
        "HAS_RECLAIM": ((("vmscan", "mm_vmscan_direct_reclaim_begin"), ("vmscan", "mm_vmscan_direct_reclaim_end")),
                        "direct reclaim"),
        "HAS_MEMCG_RECLAIM": ((("vmscan", "mm_vmscan_memcg_reclaim_begin"),
                               ("vmscan", "mm_vmscan_memcg_reclaim_end")), "memcg reclaim"),
        "HAS_IRQ": ((("irq", "softirq_entry"), ("irq", "softirq_exit"), ("irq", "irq_handler_entry"),
                     ("irq", "irq_handler_exit")), "softirq load"),
    }
    SWITCHES = {"HAS_CULPRITS": "has_culprits", "HAS_FROZEN": "has_frozen", "HAS_FAULTS": "has_faults",
                "HAS_RECLAIM": "has_reclaim", "HAS_MEMCG_RECLAIM": "has_reclaim", "HAS_IRQ": "has_irq"}

    def __init__(self, config: SchedConfig) -> None:
        super().__init__(config)
        self._hists: dict[int, Log2Hist] = {}
        self._gone: set[int] = set()  # processes found gone at the last poll: folded into _exited at this one
        self._exited: dict[str, Log2Hist] = {}  # comm -> run-queue totals of its exited processes
        self._next_sweep_ns = 0
        self._threads: dict[int, ThreadTotals] = {}
        self._hot: frozenset[int] = frozenset()
        self._totals = {"runq_delay": 0, "offcpu": 0, "direct_reclaim": 0, "softirq": 0, "cgroup_throttle": 0}
        self._faults = FaultCounter()
        self._cgroups = CgroupWatch() if config.has_cgroups else None

    def defines(self) -> dict[str, int]:
        c = self.config
        return {"SLOW_RUNQ_NS": int(c.slow_runq_ms * 1e6), "MAX_THREADS": c.max_threads,
                "NUM_CPUS": bpf_host.possible_cpus(), "MAX_WAITERS": MAX_WAITERS, "NUM_CULPRITS": NUM_CULPRITS,
                "CHARGE_MIN_NS": min(CHARGE_MIN_NS, int(c.slow_runq_ms * 1e6) // 10),
                "HOT_OFFCPU_NS": int(c.hot_offcpu_ms * 1e6), "SLOW_OFFCPU_NS": int(c.slow_offcpu_ms * 1e6),
                "MIN_RECLAIM_NS": int(c.min_reclaim_ms * 1e6), "IRQ_WINDOW_NS": int(c.softirq_window_ms * 1e6),
                "IRQ_PCT": int(c.softirq_pct), "IRQ_MAX_RUN_NS": IRQ_MAX_RUN_NS,
                "IRQ_ALL_CPUS": int(c.softirq_cpus == "all"), "USE_RAW_TP": int(self._has_raw_tracepoints())}

    @classmethod
    def requirements(cls) -> list[Requirement]:
        return super().requirements() + [Requirement(
            "raw tracepoints", cls._has_raw_tracepoints(), "optional: a cgroup v1 freeze told from D, cheaper "
            "interrupt and fault tracing", "a kernel >= 5.18 with raw tracepoints; frozen threads show as D meanwhile",
            is_optional=True)]

    def part_off_reason(self, flag: str) -> str:
        if not getattr(self.config, self.SWITCHES[flag]):
            return f"disabled by probes.sched.{self.SWITCHES[flag]}"
        if flag == "HAS_FROZEN":
            if not self._has_raw_tracepoints():
                return "no raw tracepoints: a cgroup v1 freeze shows as D"
            if bpf_host.kernel_version() < (5, 18):
                return "kernel before 5.18 (raw sched_switch has no prev_state): a cgroup v1 freeze shows as D"
        return super().part_off_reason(flag)

    @staticmethod
    def _has_raw_tracepoints() -> bool:
        try:
            return bool(bpf_host.import_bcc().BPF.support_raw_tracepoint())
        except ProbeUnavailable:  # no bcc: start() says so; the C text (`agent probes --ebpf`) still renders
            return False

    def describe_path(self) -> str:
        on = [flag[4:].lower() for flag, reason in self._parts.items() if not reason]
        return f"sched tracepoints, kernel histograms; parts: {', '.join(on) or 'none'}"

    def make_event(self, d: Any) -> Event:
        return sched_records.runq_delay(d)

    def _offcpu_event(self, d: Any) -> Event:
        return sched_records.offcpu(d)

    def _reclaim_event(self, d: Any) -> Event:
        return sched_records.direct_reclaim(d)

    def _softirq_event(self, d: Any) -> Event:
        return sched_records.softirq(d, int(self.config.softirq_window_ms * 1e6))

    def push_watch(self) -> None:
        """Watched tgids into the kernel, and their existing threads (new ones are caught by task_newtask)."""
        super().push_watch()
        threads = self._bpf["threads"]
        for tgid in self._watch.tgids:
            for tid in threads_of(tgid):
                threads[ctypes.c_uint32(tid)] = ctypes.c_uint32(tgid)
        self._push_hot()

    def set_hot_threads(self, tids: Iterable[int]) -> None:
        """The engine step threads (the agent passes the spans snapshot's step_tids): each off-CPU interval of
        theirs >= hot_offcpu_ms becomes an offcpu Event, and their processes' cgroups and faults are read. They
        must be threads of watched processes (span senders are watched): a switch-out is looked at only there."""
        hot = frozenset(tids)
        if hot == self._hot:
            return  # the agent may pass the same set every poll
        with self._lock:
            self._hot = hot
            if self._bpf is not None:
                self._push_hot()

    def _push_hot(self) -> None:
        bpf_maps.set_members(self._bpf["hot"], self._hot)
        threads = self._bpf["threads"]
        for tid in self._hot:
            tgid = tgid_of(tid)
            if tgid:
                threads[ctypes.c_uint32(tid)] = ctypes.c_uint32(tgid)

    def poll(self, now_ns: int) -> PollResult:
        events, drained, lost = self.read_kernel(["hist", "thread_stats"])
        with self._lock:
            stuck = {name: bpf_maps.read_all(self._bpf[name]) for name in ("blocked", "enqueued")}
            frozen_at = (dict(bpf_maps.read_all(self._bpf["frozen_at"])) if not self._parts["HAS_FROZEN"] else {})
        comms = self._watched_comms()
        cg = self._cgroups.poll(comms, now_ns) if self._cgroups is not None else CgroupPoll()
        throttled = {pid: e.attrs["periods"] for e in cg.events for pid in e.attrs["pids"]}
        paths: dict[int, str] = {}  # culprit pid -> cgroup, read once a poll
        events = [self._refine(e, throttled, paths) for e in events] + cg.events
        for e in events:
            self._totals[e.kind] = self._totals.get(e.kind, 0) + 1
        samples = self._accumulate(drained["hist"], drained["thread_stats"], now_ns)
        samples += self._faults.poll(comms, now_ns) + cg.samples
        ongoing = ongoing_states(stuck["blocked"], stuck["enqueued"], frozen_at, cg.frozen_pids, now_ns,
                                 int(self.config.ongoing_ms * 1e6), self._comms.get)
        self._expire(now_ns)
        self.update_health(lost[:2], now_ns, "raise probes.sched.slow_runq_ms / hot_offcpu_ms or narrow [watch]")
        return PollResult(samples=samples, events=events,
                          snapshot=self._snapshot(now_ns, lost, ongoing, cg))

    def _watched_comms(self) -> dict[int, str]:
        """pid -> comm of the processes whose cgroups and fault counts are read: the watch set's, and those of hot
        threads (under a watch-all filter, the processes seen this poll would be thousands)."""
        pids = set(self._watch.tgids) | {t.pid for tid, t in self._threads.items() if tid in self._hot}
        return {pid: self._comms.get(pid) for pid in sorted(pids)}

    def _refine(self, e: Event, throttled: dict[int, int], paths: dict[int, str]) -> Event:
        """What only the cgroups tell: an S / D offcpu interval during which a poll found the process's cgroup
        frozen was a freeze; a run-queue wait of a process whose cgroup was throttled this poll may be the quota's
        doing rather than its culprits' (they ran while it was throttled): `cgroup_throttled_periods` says so; and
        each culprit's cgroup, while it is alive."""
        if self._cgroups is None:
            return e
        if e.kind == "offcpu" and e.attrs["state"] in FREEZE_STATES and self._cgroups.was_frozen(
                e.pid, e.start_ns, e.end_ns):
            return replace(e, attrs={**e.attrs, "state": "frozen", "frozen_seen_by": "cgroup"})
        if e.kind != "runq_delay":
            return e
        culprits = []
        for c in e.attrs["culprits"]:
            if c["pid"] not in paths:
                paths[c["pid"]] = self._cgroups.path_of(c["pid"])
            culprits.append({**c, "cgroup": paths[c["pid"]]} if paths[c["pid"]] else c)
        extra = {"cgroup_throttled_periods": throttled[e.pid]} if e.pid in throttled else {}
        return replace(e, attrs={**e.attrs, "culprits": culprits, **extra})

    def _accumulate(self, hist_items, thread_items, now_ns: int) -> list[Sample]:
        per_tgid: dict[int, list[int]] = {}
        for key, val in hist_items:
            self._hists.setdefault(key.tgid, Log2Hist()).add(key.slot, val.count, val.sum_ns, now_ns)
            acc = per_tgid.setdefault(key.tgid, [0, 0])
            acc[0] += val.count
            acc[1] += val.sum_ns
        for key, val in thread_items:
            tid = getattr(key, "value", key)  # batch reads give plain ints for scalar keys
            t = self._threads.get(tid)
            if t is None or t.pid != val.tgid:
                t = self._threads[tid] = ThreadTotals(pid=val.tgid)
            t.add(val, now_ns)
        samples = []
        for tgid, (count, sum_ns) in per_tgid.items():
            labels = {"pid": str(tgid), "comm": self._comms.get(tgid, EXITED_COMM)}
            samples.append(Sample("runq.count", now_ns, float(count), labels))
            samples.append(Sample("runq.seconds", now_ns, sum_ns / 1e9, labels))
        return samples

    def _expire(self, now_ns: int) -> None:
        """A process found gone is published one last poll under its pid, then folded into its comm's `exited`
        run-queue totals; a gone thread leaves at the next sweep (every THREAD_SWEEP_S, or at its exit)."""
        for tgid in self._gone:
            hist = self._hists.pop(tgid, None)
            if hist is not None:
                self._exited.setdefault(self._comms.get(tgid, EXITED_COMM), Log2Hist()).merge(hist)
        self._gone = {tgid for tgid in self._hists if not is_alive(tgid)}
        if now_ns >= self._next_sweep_ns:
            self._next_sweep_ns = now_ns + int(THREAD_SWEEP_S * 1e9)
            horizon = now_ns - int(self.config.interval_s * 1e9)
            for tid in [k for k, t in self._threads.items() if t.last_change_ns < horizon and not is_alive(k)]:
                del self._threads[tid]

    def _snapshot(self, now_ns: int, lost: list[int], ongoing, cg: CgroupPoll) -> SchedSnapshot:
        processes = {tgid: SchedProcess(self._comms.get(tgid, EXITED_COMM), h.snapshot())
                     for tgid, h in self._hists.items()}
        exited = {comm: SchedProcess(comm, h.snapshot()) for comm, h in self._exited.items()}
        threads = {tid: t.times(self._comms.get(tid, EXITED_COMM), tid in self._hot)
                   for tid, t in self._threads.items()}
        tot = self._totals
        return SchedSnapshot(t_ns=now_ns, interval_s=self.config.interval_s, filter=self.filter_name,
                             processes=processes, exited=exited, threads=threads, ongoing=ongoing, cgroups=cg.states,
                             frozen_pids=sorted(cg.frozen_pids),
                             runq_delays_total=tot["runq_delay"], offcpu_events_total=tot["offcpu"],
                             reclaim_events_total=tot["direct_reclaim"], softirq_events_total=tot["softirq"],
                             cgroup_throttle_events_total=tot["cgroup_throttle"], lost_keys=lost[0],
                             lost_events=lost[1], lost_culprits=lost[2], parts_off=self.parts_off())

