"""Per-process GPU use: memory from the running-process lists, SM/memory utilisation from
nvmlDeviceGetProcessUtilization, and pid -> command from /proc.

nvmlDeviceGetProcessUtilization returns the samples newer than the timestamp we pass (NVML's wall-clock µs) and
answers NOT_FOUND when there are none, so we keep the newest sample per pid and report it while it is fresh;
older than `stale_s` it is unknown (None), never a stale number presented as current.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpusleuth.probes.gpu.nvml import NA, Nvml, as_text
from gpusleuth.probes.gpu.snapshot import GpuProcess

NO_INSTANCE = 0xFFFFFFFF  # gpuInstanceId/computeInstanceId outside MIG
CMDLINE_MAX = 200


@dataclass(slots=True)
class _UtilSample:
    t_us: int
    sm: int
    mem: int


def read_command(pid: int, proc_root: Path) -> tuple[str, str]:
    """(comm, cmdline) of a pid from /proc; empty strings when it exited or is hidden from us."""
    base = proc_root / str(pid)
    try:
        comm = (base / "comm").read_text().strip()
    except OSError:
        return "", ""
    try:
        raw = (base / "cmdline").read_bytes()
    except OSError:
        raw = b""
    cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()[:CMDLINE_MAX]
    return comm, cmdline


class ProcessSampler:
    """The processes on one GPU (or its MIG instances) with memory, utilisation and command."""

    def __init__(self, lib: Nvml, handle: Any, key: Any, proc_root: Path = Path("/proc"), stale_s: float = 3.0,
                 is_util_enabled: bool = True) -> None:
        self.lib, self.handle, self.key, self.proc_root = lib, handle, key, proc_root
        self.stale_us = int(stale_s * 1e6)
        self.is_util_enabled = is_util_enabled
        self._last_seen_us = 0
        self._util: dict[int, _UtilSample] = {}

    def _running(self) -> dict[int, GpuProcess]:
        procs: dict[int, GpuProcess] = {}
        for kind, fn in (("C", "nvmlDeviceGetComputeRunningProcesses"), ("G", "nvmlDeviceGetGraphicsRunningProcesses")):
            for p in self._listed(fn):
                entry = procs.get(p.pid)
                used = getattr(p, "usedGpuMemory", None)
                if entry is None:
                    gi, ci = getattr(p, "gpuInstanceId", NO_INSTANCE), getattr(p, "computeInstanceId", NO_INSTANCE)
                    entry = procs[p.pid] = GpuProcess(int(p.pid), kind, None,
                                                      None if gi == NO_INSTANCE else int(gi),
                                                      None if ci == NO_INSTANCE else int(ci))
                elif kind not in entry.type:
                    entry.type += "+" + kind
                if used is not None:  # None: NVML cannot tell (WDDM); keep what the other list said
                    entry.used_bytes = max(entry.used_bytes or 0, int(used))
        return procs

    def _listed(self, fn: str) -> list[Any]:
        """The process list from the newest versioned call this binding and driver have (_v3 needs R510+)."""
        for name in (f"{fn}_v3", f"{fn}_v2", fn):
            key = (self.key, name)
            if self.lib.is_unsupported(key) or not hasattr(self.lib.nv, name):
                continue
            listed = self.lib.query(name, self.handle, key=key, no_data=[])
            if listed is not NA or not self.lib.is_unsupported(key):
                return listed or []
        return []

    def _update_util(self) -> None:
        samples = self.lib.query("nvmlDeviceGetProcessUtilization", self.handle, self._last_seen_us,
                                 key=(self.key, "proc_util"), no_data=[])
        for s in samples or []:
            t_us = int(s.timeStamp)
            if t_us <= self._last_seen_us and self._last_seen_us:
                continue
            prev = self._util.get(s.pid)
            if prev is None or t_us >= prev.t_us:
                self._util[int(s.pid)] = _UtilSample(t_us, int(s.smUtil), int(s.memUtil))
        if samples:
            self._last_seen_us = max(self._last_seen_us, max(int(s.timeStamp) for s in samples))

    def read(self, now_wall_us: int) -> list[GpuProcess]:
        """The processes on this GPU by pid, with command, memory and (fresh) utilisation."""
        procs = self._running()
        if self.is_util_enabled:
            self._update_util()
        out = []
        for pid, entry in sorted(procs.items()):
            util = self._util.get(pid)
            is_fresh = util is not None and now_wall_us - util.t_us <= self.stale_us
            comm, cmdline = read_command(pid, self.proc_root)
            if not comm:
                comm = as_text(self.lib.query("nvmlSystemGetProcessName", pid, key=("proc_name",)))
            used = entry.used_bytes
            entry.comm, entry.cmdline = comm, cmdline
            entry.used_mib = None if used is None else used // 1048576
            if is_fresh:
                entry.sm_util_pct, entry.mem_util_pct = util.sm, util.mem
            out.append(entry)
        for pid in [p for p in self._util if p not in procs]:  # forget exited processes
            del self._util[pid]
        return out
