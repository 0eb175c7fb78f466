"""The agent under a syscall storm, and idle: RSS, CPU, drops (issue 2).

Phases, same run: (1) idle agent CPU over --idle-s; (2) a 4-thread getppid storm watched by the agent with the
default slow threshold; (3) the same storm with every syscall over the slow threshold (probes.syscalls
.slow_threshold_ms = 0) so events overflow the kernel buffer and the store: drops must be counted, RSS must
stay bounded, nothing may crash. Targets: RSS <= 200 MB, idle CPU <= 1 % of a core, >= 1 M syscalls/s.
Run as root:  .venv/bin/python benchmarks/bench_agent_storm.py
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench_syscall_overhead import Loop, build_loop
from gpusleuth.agent.harness import AGENT, write_config

HERE = Path(__file__).parent

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssWatch:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            time.sleep(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.peak


def agent_status(config: Path) -> dict:
    out = subprocess.run([AGENT, "--config", str(config), "status", "--json"], capture_output=True, text=True)
    return json.loads(out.stdout)


def run_phase(tmp: Path, loop: Loop, slow_ms: float | None, idle_s: float, storm_rounds: int) -> dict:
    tmp.mkdir()
    extra = f"\n[probes.syscalls]\nslow_threshold_ms = {slow_ms}\n" if slow_ms is not None else ""
    config = write_config(tmp, ["syscalls", "sched", "spans"], extra=extra + f'\n[probes.spans]\nsocket = "{tmp}/s.sock"\n')
    config.write_text(config.read_text().replace("[watch]", f"[watch]\npids = [{loop.pid}]"))
    subprocess.run([AGENT, "--config", str(config), "start"], check=True, capture_output=True)
    pid = int((tmp / "agent.pid").read_text())
    try:
        time.sleep(3)
        out = {"rss_after_start_mb": rss_mb(pid)}
        if idle_s:
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(idle_s)
            out["idle_cpu_percent_of_core"] = 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        watch = RssWatch(pid)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        rates = [loop.run()[1] for _ in range(storm_rounds)]
        time.sleep(2)  # let the agent drain and poll after the storm
        out.update(storm_calls_per_s=min(rates), storm_agent_cpu_percent=100 * (cpu_seconds(pid) - c0) /
                   (time.monotonic() - t0), peak_rss_mb=watch.stop())
        st = agent_status(config)
        snap = st["probes"]["syscalls"]
        out.update(agent_alive=True, syscalls_state=snap["state"], syscalls_reason=snap["reason"],
                   store=st["store"])
        sc = subprocess.run([AGENT, "--config", str(config), "status", "--json"], capture_output=True, text=True)
        out["status_rc"] = sc.returncode
    finally:
        subprocess.run([AGENT, "--config", str(config), "stop"], capture_output=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=3_000_000, help="per thread per round")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--out", default=str(HERE / "results" / "agent_storm.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        loop = Loop(build_loop(tmp), args.calls, args.threads)
        try:
            baseline = loop.run()[1]
            normal = run_phase(tmp / "normal", loop, None, args.idle_s, args.rounds)
            flood = run_phase(tmp / "flood", loop, 0.0, 0, args.rounds)
        finally:
            loop.close()
    out = {"benchmark": "agent_storm", "device": platform.machine(), "cpus": os.cpu_count(),
           "threads": args.threads, "untraced_calls_per_s": baseline, "normal": normal, "event_flood": flood,
           "targets": {"rss_le_200mb": max(normal["peak_rss_mb"], flood["peak_rss_mb"]) <= 200,
                       "idle_cpu_le_1pct": normal["idle_cpu_percent_of_core"] <= 1.0,
                       "storm_ge_1M_per_s": normal["storm_calls_per_s"] >= 1e6,
                       "drops_counted": (flood["store"]["events_dropped"] > 0 or "lost" in flood["syscalls_reason"])}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root: the agent loads BPF programs")
    main()
