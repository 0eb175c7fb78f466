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
    processes: dict[int, SyscallProcess] = field(default_factory=dict)
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
    offcpu_ns: int = 0  # blocked
    switches: int = 0  # times switched in


@dataclass(slots=True)
class SchedSnapshot:
    t_ns: int = 0
    interval_s: float = 0.0
    filter: str = "watched"  # "watched" | "all"
    processes: dict[int, SchedProcess] = field(default_factory=dict)
    threads: dict[int, ThreadTimes] = field(default_factory=dict)  # tid -> times
    runq_delays_total: int = 0  # waits of at least slow_runq_ms (each also an Event)
    lost_keys: int = 0
    lost_events: int = 0
