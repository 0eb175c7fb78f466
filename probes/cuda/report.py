"""`agent probes cuda`: which CUDA/NCCL/gloo libraries each watched process maps and which of the probe's symbols
they export (read now from /proc and the library files, no agent needed), and with `--launches` every kernel
launch of those processes for a few seconds (the probe run in this process, with launch tracing on)."""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Iterable

from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.cuda.config import CudaConfig
from gpusleuth.probes.cuda.discovery import SymbolCache, host_path, mapped_libraries, missing_functions
from gpusleuth.probes.kernel.proc_info import comm_of
from gpusleuth.probes.records import Event, monotonic_ns

MAX_LINES = 200  # launches printed one per line; the rest are in the per-thread counts


def discover(pids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """{pid: {"comm", "api", "libraries": {kind: {"path", "symbols", "missing"} or {"path", "error"}}}} for the
    processes that map at least one of the probe's libraries."""
    cache, out = SymbolCache(), {}
    for pid in sorted(pids):
        libs: dict[str, Any] = {}
        for kind, path in mapped_libraries(pid).items():
            try:
                resolved = cache.resolve(host_path(pid, path), kind)
            except Exception as exc:  # OSError from the file; bcc raises a bare Exception for a bad ELF
                libs[kind] = {"path": path, "error": str(exc)}
                continue
            libs[kind] = {"path": path, "symbols": [r.symbol for r in resolved],
                          "missing": missing_functions(kind, resolved)}
        if libs:
            api = ("driver+runtime" if "runtime" in libs else "driver only (runtime static or absent)") \
                if "driver" in libs else ""
            out[pid] = {"comm": comm_of(pid), "api": api, "libraries": libs}
    return out


def format_discovery(found: dict[int, dict[str, Any]]) -> str:
    if not found:
        return "no watched process maps libcuda, libcudart, libnccl or libtorch_cpu (see [watch] in the config)"
    lines = []
    for pid, proc in found.items():
        lines.append(f"pid {pid} ({proc['comm']}){': ' + proc['api'] if proc['api'] else ''}")
        for kind, lib in proc["libraries"].items():
            if "error" in lib:
                lines.append(f"  {kind:8} {lib['path']}: {lib['error']}")
                continue
            lines.append(f"  {kind:8} {lib['path']}: {len(lib['symbols'])} symbols")
            lines.append(f"           resolved: {', '.join(lib['symbols'])}")
            if lib["missing"]:
                lines.append(f"           not exported: {', '.join(lib['missing'])}")
    return "\n".join(lines)


def trace_launches(pids: Iterable[int], seconds: float) -> list[Event]:
    """Every kernel and graph launch of `pids` for `seconds` (needs root). Starts its own probe."""
    from gpusleuth.probes.cuda.probe import CudaProbe  # noqa: PLC0415  (bcc, BPF: only when asked)

    probe = CudaProbe(CudaConfig(libraries=["driver"], rescan_interval_s=0.1, max_events_per_poll=1_000_000))
    probe.start()
    events: list[Event] = []
    try:
        probe.update_watch(WatchSet(tgids=frozenset(pids)))
        probe.poll(monotonic_ns())
        probe.trace_launches(seconds)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))
            events += [e for e in probe.poll(monotonic_ns()).events if e.kind == "cuda.launch"]
        probe.trace_launches(0)
        events += [e for e in probe.poll(monotonic_ns()).events if e.kind == "cuda.launch"]
    finally:
        probe.stop()
    return events


def format_launches(events: list[Event], seconds: float) -> str:
    """The first launches one per line, then launches per second per thread and kernel function."""
    if not events:
        return f"no kernel launch in {seconds:g} s"
    t0 = events[0].start_ns
    lines = [f"{'ms':>9} {'pid':>7} {'tid':>7} {'fn':18} {'grid':14} {'block':12} {'shmem':>6} stream / function"]
    for e in events[:MAX_LINES]:
        a = e.attrs
        lines.append(f"{(e.start_ns - t0) / 1e6:9.3f} {e.pid:7} {e.tid:7} {a['fn']:18} "
                     f"{'x'.join(map(str, a['grid'])):14} {'x'.join(map(str, a['block'])):12} {a['shared_mem']:6} "
                     f"{a['stream']} / {a['function']}")
    if len(events) > MAX_LINES:
        lines.append(f"... {len(events) - MAX_LINES} more")
    lines.append("launches per second by thread and function:")
    for (pid, tid, comm, fn), n in Counter((e.pid, e.tid, e.comm, e.attrs["function"]) for e in events).most_common(20):
        lines.append(f"  pid {pid} tid {tid} ({comm}) {fn}: {n / seconds:.1f}/s")
    return "\n".join(lines)
