"""How busy the host was with work that is not ours, per window: the noise the suite records instead of hiding.

Host CPU time (all CPUs, psutil.cpu_times) minus the CPU time of every process the runner started (agent, engine
with its ranks, load generator, the fault's actors, the runner itself) and of kernel threads; softirq/irq time and
kernel threads (ksoftirqd, kworkers, kswapd) are kept apart, since a fault may cause them on purpose.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import psutil

from procs import cpu_seconds

BUSY_CORES = 0.25  # other processes using a quarter of a core or more on average: a busy host


@dataclass
class Reading:
    t: float
    busy_s: float  # user+nice+system of all CPUs
    irq_s: float  # irq+softirq of all CPUs
    engine_cpu_busy_s: float  # every kind of busy time on the engine's CPUs
    ours_s: float
    kthreads_s: float


class HostMeter:
    """`start()` then `stop()` around a window: other processes' CPU in cores, and the engine CPUs' load."""

    def __init__(self, our_pids: Callable[[], list[int]], engine_cpus: list[int]) -> None:
        self.our_pids, self.engine_cpus = our_pids, engine_cpus
        self._start: Reading | None = None

    def read(self) -> Reading:
        per_cpu = psutil.cpu_times(percpu=True)
        busy = sum(c.user + c.nice + c.system for c in per_cpu)
        irq = sum(c.irq + c.softirq for c in per_cpu)
        eng = sum(c.user + c.nice + c.system + c.irq + c.softirq + getattr(c, "steal", 0.0)
                  for i, c in enumerate(per_cpu) if i in self.engine_cpus)
        ours = sum(cpu_seconds(pid, with_children=False) for pid in set(self.our_pids()))
        return Reading(time.monotonic(), busy, irq, eng, ours, _kthreads_s())

    def start(self) -> None:
        self._start = self.read()

    def stop(self) -> dict[str, float | bool]:
        """Call before the fault's actors stop: a process that ended in between would drop out of `ours`."""
        a, b = self._start, self.read()
        dt = max(1e-3, b.t - a.t)
        ours, kthreads = b.ours_s - a.ours_s, b.kthreads_s - a.kthreads_s
        kthreads = max(0.0, kthreads)  # a kernel thread that exited between the readings takes its time along
        others = max(0.0, (b.busy_s - a.busy_s) - ours - kthreads) / dt
        return {"others_cores": round(others, 3), "irq_cores": round((b.irq_s - a.irq_s) / dt, 3),
                "engine_cpus_busy": round((b.engine_cpu_busy_s - a.engine_cpu_busy_s) / dt
                                          / max(1, len(self.engine_cpus)), 3),
                "ours_cores": round(ours / dt, 3), "kthread_cores": round(kthreads / dt, 3),
                "is_busy": others >= BUSY_CORES}


def _kthreads_s() -> float:
    """CPU time of kernel threads (children of kthreadd, pid 2); their user time is zero."""
    total = 0.0
    for p in psutil.process_iter(["ppid", "cpu_times"]):
        if p.info["ppid"] == 2 and p.info["cpu_times"]:
            total += p.info["cpu_times"].system
    return total
