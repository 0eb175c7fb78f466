"""Client-side history for a live agent: sparkline series and windowed latency tables from successive snapshots.

Probe snapshots hold cumulative counters (bytes, histogram buckets since start). The TUI keeps a few recent ones
and subtracts, so tables show the last `window_s` seconds and sparklines show rates, without asking the agent to
scan its sample ring on every refresh.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Iterable

from gpusleuth.tui.source import HISTORY_S, WINDOW_S

GPU_SERIES = ("util_gpu_pct", "power_w", "fb_used_mib", "gpu_temp_c")
GPM_SERIES = ("sm_active",)


def hist_delta(now: dict[str, Any], ref: dict[str, Any] | None) -> dict[str, Any] | None:
    """now - ref of one cumulative histogram {"buckets", "count", "sum_ns"}; None when nothing happened."""
    count = int(now.get("count", 0))
    if ref is not None:
        ref_count = int(ref.get("count", 0))
        if count < ref_count:  # the probe restarted or the pid was reused: the counters began again
            ref = None
        elif count == ref_count:
            return None
    if ref is None:
        if count <= 0:
            return None
        buckets = {int(k): int(v) for k, v in (now.get("buckets") or {}).items() if v}
        return {"count": count, "sum_ns": int(now.get("sum_ns", 0)), "buckets": buckets}
    ref_b = ref.get("buckets") or {}
    buckets = {}
    for k, v in (now.get("buckets") or {}).items():
        d = int(v) - int(ref_b.get(k, 0))
        if d > 0:
            buckets[int(k)] = d
    return {"count": count - int(ref.get("count", 0)), "sum_ns": int(now.get("sum_ns", 0)) - int(ref.get("sum_ns", 0)),
            "buckets": buckets}


def syscall_window(now: dict[str, Any], ref: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows {"pid", "comm", "syscall", "count", "sum_ns", "buckets"} of what changed between two snapshots."""
    rows = []
    ref_procs = (ref or {}).get("processes") or {}
    for pid, proc in (now.get("processes") or {}).items():
        ref_calls = (ref_procs.get(pid) or {}).get("syscalls") or {} if ref is not None else None
        for name, hist in (proc.get("syscalls") or {}).items():
            d = hist_delta(hist, ref_calls.get(name) if ref_calls is not None else None)
            if d is not None:
                rows.append({"pid": int(pid), "comm": proc.get("comm", ""), "syscall": name, **d})
    return rows


def runq_window(now: dict[str, Any], ref: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows {"pid", "comm", "count", "sum_ns", "buckets"} of run-queue waits between two sched snapshots."""
    rows = []
    ref_procs = (ref or {}).get("processes") or {}
    for pid, proc in (now.get("processes") or {}).items():
        ref_h = (ref_procs.get(pid) or {}).get("runq") if ref is not None else None
        d = hist_delta(proc.get("runq") or {}, ref_h if ref is not None else None)
        if d is not None:
            rows.append({"pid": int(pid), "comm": proc.get("comm", ""), **d})
    return rows


class FrameHistory:
    """Series and windows kept across live refreshes (one instance per live source)."""

    def __init__(self, history_s: float = HISTORY_S, window_s: float = WINDOW_S) -> None:
        self.history_ns = int(history_s * 1e9)
        self.window_ns = int(window_s * 1e9)
        self.series: dict[str, deque[tuple[int, float]]] = {}
        self._refs: dict[str, deque[tuple[int, dict]]] = {"syscalls": deque(), "sched": deque()}
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

    def update_gpu(self, snap: dict[str, Any] | None) -> None:
        if not snap:
            return
        t = int(snap.get("t_ns", 0))
        for gpu in snap.get("gpus") or []:
            idx = gpu.get("index")
            for name in GPU_SERIES:
                self.add_point(f"gpu.{idx}.{name}", t, gpu.get(name))
            for name in GPM_SERIES:
                self.add_point(f"gpu.{idx}.{name}", t, (gpu.get("gpm") or {}).get(name))

    def update_net(self, snap: dict[str, Any] | None) -> None:
        """Bits per second per interface and direction, from the cumulative byte counters."""
        if not snap:
            return
        t = int(snap.get("t_ns", 0))
        for iface, info in (snap.get("interfaces") or {}).items():
            for direction, d in (info.get("directions") or {}).items():
                key = f"net.{iface}.{direction}_bps"
                total = float(d.get("bytes", 0))
                last = self._last_net.get(key)
                self._last_net[key] = (t, total)
                if last is not None and t > last[0] and total >= last[1]:
                    self.add_point(key, t, (total - last[1]) * 8e9 / (t - last[0]))

    def update_requests(self, t_ns: int, requests: list[dict[str, Any]] | None) -> None:
        if requests is None:
            return
        recent = sum(1 for r in requests if (r.get("end_ns") or 0) >= t_ns - self.window_ns)
        self.add_point("engine.rps", t_ns, recent * 1e9 / self.window_ns)

    def window(self, source: str, snap: dict[str, Any] | None) -> tuple[list[dict[str, Any]], bool]:
        """Rows over the last window for "syscalls" or "sched", and whether a full window was available."""
        if not snap:
            return [], False
        refs = self._refs[source]
        t = int(snap.get("t_ns", 0))
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
