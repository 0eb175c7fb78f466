"""Client-side history for a live agent: sparkline series and windowed latency tables from successive snapshots.

Probe snapshots hold cumulative counters (bytes, histogram buckets since start). The TUI keeps a few recent ones
and subtracts, so tables show the last `window_s` seconds and sparklines show rates, without asking the agent to
scan its sample ring on every refresh.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable

from gpusleuth.probes.bpf.log2_hist import Log2Counts
from gpusleuth.probes.gpu.snapshot import GpuSnapshot, GpuState
from gpusleuth.probes.kernel.snapshot import SchedSnapshot, SyscallSnapshot
from gpusleuth.probes.net.snapshot import NetSnapshot
from gpusleuth.tui.source import HISTORY_S, WINDOW_S

# Sparkline series per GPU, named like the agent's "gpu.<name>" sample series (backfilled from those at connect).
GPU_SERIES: dict[str, Callable[[GpuState], float | None]] = {
    "util_gpu_pct": lambda g: g.util_gpu_pct, "power_w": lambda g: g.power_w, "fb_used_mib": lambda g: g.fb_used_mib,
    "gpu_temp_c": lambda g: g.gpu_temp_c, "sm_active": lambda g: g.gpm.sm_active}


def hist_delta(now: Log2Counts, ref: Log2Counts | None) -> dict[str, Any] | None:
    """now - ref of one cumulative histogram as {"count", "sum_ns", "buckets"}; None when nothing happened."""
    count = now.count
    if ref is not None:
        if count < ref.count:  # the probe restarted or the pid was reused: the counters began again
            ref = None
        elif count == ref.count:
            return None
    if ref is None:
        if count <= 0:
            return None
        return {"count": count, "sum_ns": now.sum_ns, "buckets": {k: v for k, v in now.buckets.items() if v}}
    ref_b = ref.buckets
    buckets = {}
    for k, v in now.buckets.items():
        d = v - ref_b.get(k, 0)
        if d > 0:
            buckets[k] = d
    return {"count": count - ref.count, "sum_ns": now.sum_ns - ref.sum_ns, "buckets": buckets}


def syscall_window(now: SyscallSnapshot, ref: SyscallSnapshot | None) -> list[dict[str, Any]]:
    """Rows {"pid", "comm", "syscall", "count", "sum_ns", "buckets"} of what changed between two snapshots."""
    rows = []
    ref_procs = ref.processes if ref is not None else {}
    for pid, proc in now.processes.items():
        ref_proc = ref_procs.get(pid)
        ref_calls = ref_proc.syscalls if ref_proc is not None else {}
        for name, hist in proc.syscalls.items():
            d = hist_delta(hist, ref_calls.get(name))
            if d is not None:
                rows.append({"pid": pid, "comm": proc.comm, "syscall": name, **d})
    return rows


def runq_window(now: SchedSnapshot, ref: SchedSnapshot | None) -> list[dict[str, Any]]:
    """Rows {"pid", "comm", "count", "sum_ns", "buckets"} of run-queue waits between two sched snapshots."""
    rows = []
    ref_procs = ref.processes if ref is not None else {}
    for pid, proc in now.processes.items():
        ref_proc = ref_procs.get(pid)
        d = hist_delta(proc.runq, ref_proc.runq if ref_proc is not None else None)
        if d is not None:
            rows.append({"pid": pid, "comm": proc.comm, **d})
    return rows


class FrameHistory:
    """Series and windows kept across live refreshes (one instance per live source)."""

    def __init__(self, history_s: float = HISTORY_S, window_s: float = WINDOW_S) -> None:
        self.history_ns = int(history_s * 1e9)
        self.window_ns = int(window_s * 1e9)
        self.series: dict[str, deque[tuple[int, float]]] = {}
        self._refs: dict[str, deque[tuple[int, Any]]] = {"syscalls": deque(), "sched": deque()}
        self._last_net: dict[str, tuple[int, float]] = {}

    def add_point(self, key: str, t_ns: int, value: float | None) -> None:
        if value is None:
            return
        points = self.series.setdefault(key, deque())
        if points and t_ns <= points[-1][0]:
            return  # the probe has not polled since: keep one point per poll
        points.append((t_ns, float(value)))
        while points and points[0][0] < t_ns - self.history_ns:
            points.popleft()

    def backfill(self, key: str, points: Iterable[tuple[int, float]]) -> None:
        """Older points (from the agent's sample ring at connect time) in front of what we gathered."""
        existing = self.series.get(key) or deque()
        first = existing[0][0] if existing else 1 << 62
        merged = deque(sorted(p for p in points if p[0] < first))
        merged.extend(existing)
        self.series[key] = merged

    def update_gpu(self, snap: GpuSnapshot | None) -> None:
        if snap is None:
            return
        for gpu in snap.gpus:
            for name, value in GPU_SERIES.items():
                self.add_point(f"gpu.{gpu.index}.{name}", snap.t_ns, value(gpu))

    def update_net(self, snap: NetSnapshot | None) -> None:
        """Bits per second per interface and direction, from the cumulative byte counters."""
        if snap is None:
            return
        t = snap.t_ns
        for iface, info in snap.interfaces.items():
            for direction, d in info.directions.items():
                key = f"net.{iface}.{direction}_bps"
                total = float(d.bytes)
                last = self._last_net.get(key)
                self._last_net[key] = (t, total)
                if last is not None and t > last[0] and total >= last[1]:
                    self.add_point(key, t, (total - last[1]) * 8e9 / (t - last[0]))

    def update_requests(self, t_ns: int, requests: list[dict[str, Any]] | None) -> None:
        if requests is None:
            return
        recent = sum(1 for r in requests if (r.get("end_ns") or 0) >= t_ns - self.window_ns)
        self.add_point("engine.rps", t_ns, recent * 1e9 / self.window_ns)

    def window(self, source: str, snap: SyscallSnapshot | SchedSnapshot | None) -> tuple[list[dict[str, Any]], bool]:
        """Rows over the last window for "syscalls" or "sched", and whether a full window was available."""
        if snap is None:
            return [], False
        refs = self._refs[source]
        t = snap.t_ns
        if not refs or t - refs[-1][0] >= 1e9:  # one reference a second is enough
            refs.append((t, snap))
        while len(refs) > 1 and refs[1][0] <= t - self.window_ns:
            refs.popleft()  # keep exactly one reference at or before the window start
        ref_t, ref = refs[0]
        is_full = ref_t <= t - self.window_ns * 0.9
        if ref is snap:
            ref = None  # first snapshot: show totals since the probe started
        fn = syscall_window if source == "syscalls" else runq_window
        return fn(snap, ref), is_full

    def snapshot_series(self) -> dict[str, list[tuple[int, float]]]:
        return {k: list(v) for k, v in self.series.items()}
