"""Shared pieces of the TUI tests: a fixed-data Frame factory, a real-agent fixture helper, screen text."""
from __future__ import annotations

import math
import os
import time
from typing import Any

from gpusleuth.probes.gpu.snapshot import GpmMetrics, GpuProcess, GpuSnapshot, GpuState
from gpusleuth.probes.kernel.snapshot import SchedSnapshot, SyscallSnapshot
from gpusleuth.probes.net.snapshot import (DirectionTotals, DropCounts, InterfaceState, LastBurst, NetSnapshot,
                                           RetransmitCounts, RootQdisc, TcpSnapshot)
from gpusleuth.probes.spans.snapshot import SpanSender, SpansSnapshot
from gpusleuth.tui.source import Frame, FixedSource

T0 = 1_000_000_000_000  # the fixed frame's "now" on the monotonic clock (1000 s after boot)
WALL_OFFSET = 1_700_000_000_000_000_000 - T0  # so "now" is 2023-11-14 22:13:20 UTC
S = 1_000_000_000


def use_utc() -> None:
    """Wall-clock text in snapshots must not depend on the machine's time zone."""
    os.environ["TZ"] = "UTC"
    time.tzset()


def _wave(i: int, period: float, lo: float, hi: float) -> float:
    return lo + (hi - lo) * (0.5 + 0.5 * math.sin(i / period))


def _gpu(index: int, throttled: bool) -> GpuState:
    return GpuState(
        index=index, uuid=f"GPU-0000000{index}-aaaa-bbbb-cccc-dddddddddddd", name="NVIDIA H100 80GB HBM3",
        pci_bus_id=f"00000000:1{index}:00.0", device=f"nvidia{index}", is_lost=False, lost_reason="",
        is_mig=False, util_gpu_pct=87 - 30 * index, util_mem_pct=41, sm_clock_mhz=1755,
        mem_clock_mhz=2619, power_w=612.5 - 200 * index, power_avg_w=600.1, power_limit_w=700.0,
        gpu_temp_c=66 + index, mem_temp_c=71, pstate=0,
        clock_event_reasons=0x004 if throttled else 0, throttle_since_ns=T0 - 12 * S if throttled else None,
        fb_total_mib=81559, fb_used_mib=61234 - 20000 * index, fb_free_mib=20325, fb_reserved_mib=0,
        pcie_tx_bytes_s=1.2e9, pcie_rx_bytes_s=3.4e8, nvlink_tx_bytes_s=4.1e10, nvlink_rx_bytes_s=4.0e10,
        ecc_sbe_vol=0, ecc_dbe_vol=0, remapped_rows_cor=0, remapped_rows_unc=0,
        gpm=GpmMetrics(sm_active=0.62 - 0.2 * index, sm_occupancy=0.35, tensor_active=0.41, dram_active=0.55),
        processes=[GpuProcess(pid=4242, comm="python3", type="compute", used_mib=60100 - 20000 * index,
                              sm_util_pct=80 - 30 * index, mem_util_pct=40)],
        xid_counts={79: 1} if throttled else {}, last_xid=79 if throttled else 0,
    )


def _net() -> NetSnapshot:
    last_burst = LastBurst(start_ns=T0 - 45_800_000_000, end_ns=T0 - 45_799_200_000, bytes=1_250_000, peak_bps=9.6e9)
    eth0 = InterfaceState(kind="physical", speed_mbps=10000.0, threshold_bps=5e9, directions={
        "ingress": DirectionTotals(bytes=910_000_000_000, bursts=3, last_burst=last_burst),
        "egress": DirectionTotals(bytes=22_000_000_000, bursts=0, last_burst=None)},
        qdisc=RootQdisc(kind="fq_codel", backlog_bytes=0, drops=12))
    tcp = TcpSnapshot(retransmits=RetransmitCounts(segments=4, skbs=2, by_remote={"10.0.0.7:51234": 4},
                                                   by_process={"4242/python3": 4}),
                      drops=DropCounts(count=1, by_reason={"TCP_OLD_DATA": 1}), missed_events=0)
    return NetSnapshot(t_ns=T0, interfaces={"eth0": eth0}, tcp=tcp)


def _series(num_gpus: int) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for i in range(300):
        t = T0 - (300 - i) * S + S
        for g in range(num_gpus):
            out.setdefault(f"gpu.{g}.util_gpu_pct", []).append((t, _wave(i + 20 * g, 9, 20, 95)))
            out.setdefault(f"gpu.{g}.sm_active", []).append((t, _wave(i + 20 * g, 9, 0.1, 0.7)))
            out.setdefault(f"gpu.{g}.power_w", []).append((t, _wave(i, 15, 300, 690)))
            out.setdefault(f"gpu.{g}.fb_used_mib", []).append((t, 61234.0))
        out.setdefault("net.eth0.ingress_bps", []).append((t, _wave(i, 5, 1e8, 9e9)))
        out.setdefault("net.eth0.egress_bps", []).append((t, _wave(i, 7, 1e7, 2e8)))
        out.setdefault("engine.rps", []).append((t, _wave(i, 11, 1, 6)))
    return out


SYSCALL_ROWS = [
    {"pid": 4242, "comm": "python3", "syscall": "futex", "count": 5210, "sum_ns": 9_100_000_000,
     "buckets": {20: 5000, 24: 200, 27: 10}},
    {"pid": 4242, "comm": "python3", "syscall": "read", "count": 880, "sum_ns": 240_000_000,
     "buckets": {12: 800, 16: 70, 25: 10}},
    {"pid": 4242, "comm": "python3", "syscall": "ioctl", "count": 12000, "sum_ns": 60_000_000,
     "buckets": {12: 11990, 13: 10}},
    {"pid": 977, "comm": "tokenizer", "syscall": "write", "count": 40, "sum_ns": 2_000_000,
     "buckets": {15: 39, 17: 1}},
]
RUNQ_ROWS = [
    {"pid": 4242, "comm": "python3", "count": 40210, "sum_ns": 3_400_000_000, "buckets": {14: 39600, 23: 600, 24: 10}},
    {"pid": 977, "comm": "tokenizer", "count": 302, "sum_ns": 9_000_000, "buckets": {15: 300, 18: 2}},
]


def _requests() -> list[dict[str, Any]]:
    out = []
    for i in range(24):
        start = T0 - (60 - 2 * i) * S
        slow = i == 7
        ttft = 2.41 if slow else 0.12 + 0.01 * (i % 5)
        e2e = ttft + 0.031 * 63
        out.append({"request_id": f"cmpl-{i:04d}", "pid": 4242, "rank": 0, "start_ns": start,
                    "end_ns": start + int(e2e * 1e9), "queue_s": 2.2 if slow else 0.01 * (i % 3), "ttft_s": ttft,
                    "tpot_s": 0.031 + 0.001 * (i % 4), "e2e_s": e2e, "prompt_tokens": 512 + i,
                    "output_tokens": 64, "status": "stop" if i % 9 else "length"})
    return out


def _events() -> list[dict[str, Any]]:
    base = T0 - 47 * S
    raw = [
        ("slow_syscall", "syscalls", base + 100_000_000, 48_000_000, 4242, "python3", {"syscall": "read", "nr": 0}),
        ("runq_delay", "sched", base + 400_000_000, 9_000_000, 4242, "python3",
         {"prev_pid": 31337, "prev_comm": "backup.sh"}),
        ("net.microburst", "net", base + 1_200_000_000, 800_000, 0, "",
         {"interface": "eth0", "direction": "ingress", "bytes": 1_250_000, "packets": 900, "peak_bps": 9.6e9,
          "top_flows": []}),
        ("gpu_throttle", "gpu", base + 1_500_000_000, 12 * S, 0, "", {"gpu": 1, "reasons": ["sw_power_cap"]}),
        ("gpu_xid", "gpu", base + 2_000_000_000, 0, 4242, "python3",
         {"gpu": 1, "xid": 79, "name": "GPU has fallen off the bus", "severity": "fatal"}),
        ("net.tcp_retransmit", "net", base + 2_100_000_000, 0, 4242, "python3",
         {"local": "10.0.0.5:8000", "remote": "10.0.0.7:51234", "segments": 3, "skbs": 1, "bytes": 4344}),
        # idle waits (tui/idle.py): hidden on the Events screen until `i`
        ("slow_syscall", "syscalls", base + 2_200_000_000, 11_800_000, 4242, "python3",
         {"syscall": "epoll_wait", "nr": 232}),
        ("offcpu", "sched", base + 2_300_000_000, 25_000_000, 4242, "gs-step", {"state": "S", "cpu": 3}),
    ]
    return [{"kind": k, "source": src, "start_ns": s, "end_ns": s + d, "pid": pid, "tid": pid, "comm": comm,
             "attrs": attrs, "seq": i + 1} for i, (k, src, s, d, pid, comm, attrs) in enumerate(raw)]


def fixed_frame(*, has_gpu: bool = True, num_gpus: int = 2) -> Frame:
    """A busy-but-plausible host: 2 H100s (one power-capped, XID 79), an engine, a slow request, events."""
    probes = {name: {"state": "ok", "reason": "", "path": "", "polls": 100, "poll_errors": 0, "last_poll_s": 0.001}
              for name in ("syscalls", "sched", "net", "gpu", "spans")}
    snapshots: dict[str, Any] = {
        "syscalls": SyscallSnapshot(t_ns=T0), "sched": SchedSnapshot(t_ns=T0), "net": _net(),
        "spans": SpansSnapshot(t_ns=T0, in_flight=15, senders={4242: SpanSender(
            comm="python3", ranks=[0], spans=9000, num_waiting=3, num_running=12, kv_usage=0.63)}),
    }
    if has_gpu:
        snapshots["gpu"] = GpuSnapshot(t_ns=T0, gpus=[_gpu(i, throttled=i == 1) for i in range(num_gpus)])
    else:
        probes["gpu"] = {"state": "unavailable", "reason": "NVML library not found (no NVIDIA driver on this host)",
                         "path": "", "polls": 0, "poll_errors": 0, "last_poll_s": 0}
    return Frame(t_ns=T0, wall_offset_ns=WALL_OFFSET, snapshots=snapshots,
                 status={"pid": 1234, "uptime_s": 3723.0, "probes": probes, "monotonic_ns": T0},
                 series=_series(num_gpus if has_gpu else 0), windows={"syscalls": SYSCALL_ROWS, "runq": RUNQ_ROWS},
                 events=_events(), requests=_requests(), incidents=incidents())


def slow_request_detail() -> dict[str, Any]:
    req = next(r for r in _requests() if r["request_id"] == "cmpl-0007")
    s = req["start_ns"]
    phases = [{"phase": "queued", "start_ns": s, "end_ns": s + 2_200_000_000, "rank": 0, "tokens": 519},
              {"phase": "prefill", "start_ns": s + 2_200_000_000, "end_ns": s + 2_410_000_000, "rank": 0,
               "tokens": 519, "batch_size": 12},
              {"phase": "decode", "start_ns": s + 2_410_000_000, "end_ns": req["end_ns"], "rank": 0, "tokens": 63}]
    overlapping = [e for e in _events() if e["start_ns"] <= req["end_ns"] and e["end_ns"] >= s]
    verdicts = [{"cause": "cpu_contention", "score": 0.81, "share": 0.81, "explained_ms": 1960.0, "is_likely": True,
                 "culprit": {"pid": 31337, "comm": "backup.sh", "tid": 31337, "cpu": 3},
                 "evidence": "gs-step (pid 4242, tid 4250) waited 1.98 s for a CPU in 36 run-queue waits of engine "
                             "thread gs-step (longest 120 ms, CPU 3); on that CPU meanwhile: backup.sh (pid 31337) "
                             "1.95 s, kworker/3:1 (pid 211) 4.1 ms",
                 "runbook": "/usr/lib/python3/dist-packages/gpusleuth/runbooks/cpu-contention.md"},
                {"cause": "queueing", "score": 0.05, "share": 0.05, "explained_ms": 121.0, "is_likely": False,
                 "culprit": {"pid": 4242, "comm": "python3", "request_ids": ["cmpl-0005", "cmpl-0006"]},
                 "evidence": "request cmpl-0007 waited 121 ms beyond the usual through 4 steps of other requests",
                 "runbook": "/usr/lib/python3/dist-packages/gpusleuth/runbooks/queueing.md"}]
    parts = [("queue", 2200.0, 10.0), ("prefill", 210.0, 120.0), ("decode", 1953.0, 1950.0)]
    budget = {"parts": [{"part": n, "actual_ms": a, "expected_ms": e, "excess_ms": a - e, "steps": 1,
                         "waited_steps": 0, "baseline": "nearest"} for n, a, e in parts],
              "actual_ms": 4363.0, "expected_ms": 2080.0, "excess_ms": 2283.0, "unexplained_ms": 202.0,
              "unexplained_share": 0.088, "is_slow": True}
    return {"request": req, "phases": phases, "overlapping": overlapping, "verdicts": verdicts, "budget": budget,
            "unexplained_ms": 202.0, "notes": {}}


def incidents() -> list[dict[str, Any]]:
    """An open CPU-contention incident and an older, ended queueing one."""
    return [{"id": "inc-4242-1", "cause": "queueing", "culprit": {"pid": 4242, "comm": "python3"},
             "onset_ns": T0 - 200 * S, "last_ns": T0 - 150 * S, "opened_ns": T0 - 199 * S, "is_open": False,
             "evidence": "requests waited 1.2 s beyond the usual behind full batches", "engine_pid": 4242,
             "engine_comm": "python3", "explained_ms": 1200.0,
             "runbook": "/usr/lib/python3/dist-packages/gpusleuth/runbooks/queueing.md"},
            {"id": "inc-4242-2", "cause": "cpu_contention", "culprit": {"pid": 31337, "comm": "backup.sh", "cpu": 3},
             "onset_ns": T0 - 48 * S, "last_ns": T0 - S, "opened_ns": T0 - 47 * S, "is_open": True,
             "evidence": "gs-step (pid 4242, tid 4250) waited 310 ms for a CPU in 12 waits (longest 41 ms, CPU 3); "
                         "on that CPU meanwhile: backup.sh (pid 31337) 300 ms", "engine_pid": 4242,
             "engine_comm": "python3", "explained_ms": 280.0,
             "runbook": "/usr/lib/python3/dist-packages/gpusleuth/runbooks/cpu-contention.md"}]


def fixed_source(*, has_gpu: bool = True, with_cursor: bool = False) -> FixedSource:
    cursor = {"cursor_ns": T0, "start_ns": T0 - 300 * S, "end_ns": T0, "wall_offset_ns": WALL_OFFSET} \
        if with_cursor else None
    return FixedSource(fixed_frame(has_gpu=has_gpu), {"cmpl-0007": slow_request_detail()},
                       label="fixed data", cursor=cursor)


def screen_text(app) -> str:
    """Plain text of the visible screen (what a terminal would show)."""
    from rich.console import Console  # noqa: PLC0415

    width, height = app.size
    console = Console(width=width, height=height, record=True, force_terminal=False, color_system=None,
                      file=open(os.devnull, "w"))
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


def demo(has_gpu: bool = True) -> None:
    """`python -c 'from tests.tui_helpers import demo; demo()'`: the fixed-data app, to look at layouts."""
    from gpusleuth.tui.app import SleuthApp  # noqa: PLC0415

    use_utc()
    SleuthApp(fixed_source(has_gpu=has_gpu)).run()


# --- Pilot helpers ---------------------------------------------------------------------------------------------
async def until(pilot, predicate, timeout: float = 15.0, what: str = "condition"):
    """Poll `predicate()` between Textual ticks; returns its value or fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await pilot.pause(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


def panel_text(app, panel_id: str) -> str:
    return app.screen.query_one(f"#{panel_id}").shown_text


def table_rows(app, table_id: str) -> list[list[str]]:
    """Every row of a RowTable as plain strings."""
    return app.screen.query_one(f"#{table_id}").plain_rows()

