"""What the syscall and scheduler probes publish each poll (`store.snapshot("syscalls")` / `("sched")`).

Counts and times are cumulative since the probe started; a histogram slot s holds [2^(s-1), 2^s) ns
(probes/bpf/log2_hist.py). Process and thread maps are keyed by pid / tid.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpusleuth.probes.bpf.log2_hist import Log2Counts


@dataclass(slots=True)
class SyscallProcess:
    comm: str = ""
    syscalls: dict[str, Log2Counts] = field(default_factory=dict)  # syscall name -> latency histogram


@dataclass(slots=True)
class SyscallSnapshot:
    t_ns: int = 0
    interval_s: float = 0.0  # the probe's poll interval: a client need not ask again sooner
    filter: str = "watched"  # "watched" | "all"
    watched_tgids: int = 0
    processes: dict[int, SyscallProcess] = field(default_factory=dict)  # live processes (and those gone this poll)
    exited: dict[str, SyscallProcess] = field(default_factory=dict)  # comm -> totals of its exited processes
    slow_events_total: int = 0  # syscalls slower than slow_threshold_ms (each also an Event)
    lost_keys: int = 0  # histogram keys the kernel map had no room for
    lost_events: int = 0  # slow-syscall events dropped (kernel buffer full or over the per-poll bound)


@dataclass(slots=True)
class SchedProcess:
    comm: str = ""
    runq: Log2Counts = field(default_factory=Log2Counts)  # run-queue latency of the process's threads


@dataclass(slots=True)
class ThreadTimes:
    pid: int = 0  # the thread's process
    comm: str = ""
    runq_ns: int = 0  # runnable but waiting for a CPU
    offcpu_ns: int = 0  # blocked (from leaving the CPU to its wakeup)
    switches: int = 0  # times switched in
    faults: int = 0  # user page faults (exceptions:page_fault_user; 0 where the kernel lacks it)
    reclaim_ns: int = 0  # in direct or memcg reclaim
    cpu: int = -1  # the CPU it last switched in on (-1: not seen)
    is_hot: bool = False  # one of the agent's hot (engine step) threads


@dataclass(slots=True)
class OngoingState:
    """A watched thread stuck at poll time: off-CPU stopped / traced / in D / frozen, or runnable but not running,
    for at least probes.sched.ongoing_ms, and still so."""

    tid: int = 0
    pid: int = 0
    comm: str = ""
    state: str = ""  # "T" | "t" | "D" | "frozen" | "R" (runnable, waiting for `cpu`)
    since_ns: int = 0
    cpu: int = -1  # R: the CPU it waits on; otherwise the CPU it last ran on


@dataclass(slots=True)
class CgroupState:
    """One cgroup of the watched processes (their own, and each ancestor that sets a CPU quota), as of this poll.
    Counters are cumulative as the kernel keeps them."""

    path: str = ""  # inside its hierarchy, e.g. /system.slice/engine.service
    version: int = 2  # 1 | 2: the hierarchy its CPU controller is on
    pids: list[int] = field(default_factory=list)  # the watched processes in it or below it
    nr_periods: int = 0
    nr_throttled: int = 0
    throttled_ns: int = 0
    quota_us: int | None = None  # None: no CPU quota
    period_us: int | None = None
    memory_pressure_some_us: int | None = None  # PSI "some" total; None: not available
    pressure_scope: str = ""  # "cgroup" (v2, this cgroup's) | "system" (v1: /proc/pressure/memory)


@dataclass(slots=True)
class SchedSnapshot:
    t_ns: int = 0
    interval_s: float = 0.0
    filter: str = "watched"  # "watched" | "all"
    processes: dict[int, SchedProcess] = field(default_factory=dict)  # live processes (and those gone this poll)
    exited: dict[str, SchedProcess] = field(default_factory=dict)  # comm -> run-queue totals of exited processes
    threads: dict[int, ThreadTimes] = field(default_factory=dict)  # tid -> times
    ongoing: list[OngoingState] = field(default_factory=list)
    cgroups: list[CgroupState] = field(default_factory=list)
    frozen_pids: list[int] = field(default_factory=list)  # watched processes whose cgroup is frozen (v1 or v2)
    runq_delays_total: int = 0  # waits of at least slow_runq_ms (each also an Event)
    offcpu_events_total: int = 0
    reclaim_events_total: int = 0
    softirq_events_total: int = 0
    cgroup_throttle_events_total: int = 0
    lost_keys: int = 0
    lost_events: int = 0
    lost_culprits: int = 0  # waits whose culprits could not be tracked (too many waiters on one CPU)
    parts_off: list[str] = field(default_factory=list)  # optional parts this kernel cannot run, and why
