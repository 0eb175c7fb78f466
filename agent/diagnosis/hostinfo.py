"""Host facts the live diagnosis refreshes from the probes' snapshots and /proc: GPU uuid -> NVML index, comms of
GPU processes, the engines' threads and cgroups, and the CPU each hot thread last ran on (kept as Samples
`diag.thread_cpu{pid,tid}` so a recording has it too)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from gpusleuth.agent.diagnosis.context import HostInfo
from gpusleuth.probes.records import Sample

CPU_SERIES = "diag.thread_cpu"
CGROUP_SERIES_PREFIX = "cgroup."


def from_gpu_snapshot(host: HostInfo, gpu: Any) -> None:
    for g in getattr(gpu, "gpus", None) or ():
        if g.uuid:
            host.gpu_index_by_uuid[g.uuid] = g.index
        for p in g.processes or ():
            if p.comm:
                host.comms[p.pid] = p.comm


def from_samples(host: HostInfo, samples: Iterable[Sample]) -> None:
    """The engine's cgroup path from the cgroup probe's labels ({cgroup, pid})."""
    for s in samples:
        if s.series.startswith(CGROUP_SERIES_PREFIX) and "pid" in s.labels and "cgroup" in s.labels:
            try:
                host.cgroups[int(s.labels["pid"])] = str(s.labels["cgroup"])
            except ValueError:
                continue


def from_sched_snapshot(host: HostInfo, sched: Any) -> None:
    """Each watched process's cgroup (the one with a CPU quota where there is one, else the deepest)."""
    best: dict[int, tuple[bool, int, str]] = {}
    for cg in getattr(sched, "cgroups", None) or ():
        rank = (cg.quota_us is not None, cg.path.count("/"), cg.path)
        for pid in cg.pids:
            if pid not in best or rank > best[pid]:
                best[pid] = rank
    for pid, (_, _, path) in best.items():
        host.cgroups[pid] = path


def refresh_threads(host: HostInfo, pids: Iterable[int], proc: Path = Path("/proc")) -> None:
    """tid -> pid for every thread of the engines (for telling the engine's own wakers from others)."""
    for pid in pids:
        try:
            for entry in (proc / str(pid) / "task").iterdir():
                host.tids[int(entry.name)] = pid
        except OSError:  # exited, or not visible from here
            continue


def last_cpu(pid: int, tid: int, proc: Path = Path("/proc")) -> int | None:
    """Field 39 of /proc/PID/task/TID/stat: the CPU the thread last ran on."""
    try:
        text = (proc / str(pid) / "task" / str(tid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[36]) if len(fields) > 36 else None


def thread_cpu_samples(threads: Iterable[tuple[int, int]], seen: dict[int, int], now_ns: int) -> list[Sample]:
    """A sample per hot thread whose CPU changed since last time (and updates `seen`)."""
    out = []
    for pid, tid in threads:
        cpu = last_cpu(pid, tid)
        if cpu is not None and seen.get(tid) != cpu:
            seen[tid] = cpu
            out.append(Sample(CPU_SERIES, now_ns, float(cpu), {"pid": str(pid), "tid": str(tid)}))
    return out
