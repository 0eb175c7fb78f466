"""What the sched probe costs: the old probe (git --old-ref) against the new one on a scheduler-heavy ping-pong, the
event rate under a hog and a switch storm, and the irq part under a UDP flood.

1. Ping-pong (benchmarks/sched_pingpong.c, two threads over pipes, pinned to one CPU): ns per round trip with no
   probe, the old probe, the new probe, and the new probe without culprits; interleaved rounds so drift hits every
   variant alike; plus in-kernel ns per program run (kernel.bpf_stats_enabled).
2. Bounded events: a watched thread waking every ms behind a hog, and beside an unwatched ping-pong on its CPU:
   context switches/s on the host (/proc/stat) against runq_delay events/s.
3. Interrupt load: a UDP flood over loopback (sendmmsg, benchmarks/udp_flood.c) with no probe, with the probe not
   timing that CPU (no watched thread there) and timing it: datagrams/s, irq program runs/s and their in-kernel ns.
Run as root:  .venv/bin/python benchmarks/bench_sched_overhead.py
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.kernel.sched import SchedConfig, SchedProbe
from gpusleuth.probes.records import monotonic_ns

from bench_common import log, write_result

HERE = Path(__file__).parent
ROOT = HERE.parent
CPU = 1


def build(tmp: Path, name: str) -> Path:
    exe = tmp / name
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(HERE / f"{name}.c")], check=True)
    return exe


def old_probe_class(tmp: Path, ref: str):
    """SchedProbe as of git `ref`: its sched.py and sched.c written to `tmp` and imported from there."""
    for name in ("sched.py", "sched.c"):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:probes/kernel/{name}"], check=True,
                              capture_output=True, text=True).stdout
        (tmp / name).write_text(text)
    spec = importlib.util.spec_from_file_location("old_sched", tmp / "sched.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.SchedProbe, module.SchedConfig


class PingPong:
    def __init__(self, exe: Path, rounds: int, cpu: int) -> None:
        self.proc = subprocess.Popen([str(exe), str(rounds), str(cpu)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = int(self.proc.stdout.readline().split()[1])

    def run(self) -> float:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline().split()[0])

    def close(self) -> None:
        self.proc.communicate("q\n", timeout=60)


def with_probe(probe, pid: int, fn):
    probe.update_watch(WatchSet(tgids=frozenset({pid})))
    probe.start()
    try:
        return fn()
    finally:
        probe.stop()


def prog_stats() -> dict[int, tuple[str, int, int]]:
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: (p.get("name", ""), p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in json.loads(out)}


def measured(probe, pid: int, run) -> dict[str, dict[str, float]]:
    """Start `probe` watching `pid`, then per BPF program it loaded: runs/s and ns per run during `run()`
    (kernel.bpf_stats_enabled must be 1). Its programs are those that appeared while it started under the names of
    its functions: on a shared box others load programs (another agent's sched probe) at any time."""
    before = set(prog_stats())
    probe.update_watch(WatchSet(tgids=frozenset({pid})))
    probe.start()
    try:
        names = {n.decode() if isinstance(n, bytes) else n for n in probe._bpf.funcs}
        # the kernel names a raw tracepoint program by its tracepoint (raw_tracepoint__sched_switch: sched_switch)
        start = {k: v for k, v in prog_stats().items() if k not in before
                 and any(n == v[0] or n.endswith("__" + v[0]) for n in names)}
        t0 = time.monotonic()
        run()
        dt = time.monotonic() - t0
        out = {}
        for prog, (name, t, c) in prog_stats().items():
            if prog in start and c - start[prog][2] > 100:
                runs, ns = c - start[prog][2], t - start[prog][1]
                out[name] = {"runs_per_s": runs / dt, "ns_per_run": ns / runs, "ns_total": ns}
        return out
    finally:
        probe.stop()


class BpfStats:
    def __enter__(self):
        self.path = Path("/proc/sys/kernel/bpf_stats_enabled")
        self.old = self.path.read_text().strip()
        self.path.write_text("1")

    def __exit__(self, *exc):
        self.path.write_text(self.old)


def pingpong(exe: Path, args, old_cls, old_cfg) -> dict:
    """Wall-clock ns per round trip in interleaved rounds (bpf stats off), then in-kernel ns per round trip of each
    probe's programs in interleaved rounds of their own (bpf stats on); medians of both."""
    loop = PingPong(exe, args.rounds_per_run, CPU)
    probes = {"old_probe": lambda: old_cls(old_cfg()), "new_probe": lambda: SchedProbe(SchedConfig()),
              "new_no_culprits": lambda: SchedProbe(SchedConfig(has_culprits=False))}
    wall: dict[str, list[float]] = {k: [] for k in ["none", *probes]}
    for r in range(args.rounds):
        for name in wall:
            wall[name].append(loop.run() if name == "none" else with_probe(probes[name](), loop.pid, loop.run))
            log(f"ping-pong round {r} {name:<16} {wall[name][-1]:8.1f} ns/round trip")
    kernel: dict[str, list[float]] = {k: [] for k in probes}
    last: dict[str, dict] = {}
    with BpfStats():
        for r in range(args.rounds):
            for name, make in probes.items():
                last[name] = measured(make(), loop.pid, loop.run)
                kernel[name].append(sum(p["ns_total"] for p in last[name].values()) / args.rounds_per_run)
                log(f"in-kernel round {r} {name:<16} {kernel[name][-1]:8.1f} ns/round trip")
    loop.close()
    med = {k: statistics.median(v) for k, v in wall.items()}
    added = {k: med[k] - med["none"] for k in med if k != "none"}
    kmed = {k: statistics.median(v) for k, v in kernel.items()}
    return {"ns_per_round_trip_median": med, "raw": wall, "added_ns_per_round_trip": added,
            "new_over_old_added": added["new_probe"] / added["old_probe"] if added["old_probe"] > 0 else None,
            "in_kernel_ns_per_round_trip_median": kmed, "in_kernel_raw": kernel,
            "in_kernel_new_over_old": kmed["new_probe"] / kmed["old_probe"], "in_kernel_last_round": last}


WAKER = """
import os, sys, time
os.nice(10)
os.sched_setaffinity(0, {CPU})
sys.stdin.readline()
end = time.monotonic() + SECONDS
while time.monotonic() < end:
    time.sleep(0.001)
print("done", flush=True)
sys.stdin.readline()
"""


def host_switches() -> int:
    """Context switches on the host so far (/proc/stat ctxt; this kernel has no per-CPU /proc/schedstat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    raise RuntimeError("no ctxt line in /proc/stat")


def bounded_events(exe: Path, seconds: float) -> dict:
    """Host switches/s vs runq_delay events/s, the waker behind a hog and beside an unwatched switch storm."""
    out = {}
    hog_code = f"import os\nos.nice(-20)\nos.sched_setaffinity(0, {{{CPU}}})\nwhile True: pass\n"
    for name in ("hog", "switch_storm"):
        probe = SchedProbe(SchedConfig())
        probe.start()
        waker = subprocess.Popen([sys.executable, "-c", WAKER.replace("SECONDS", str(seconds))
                                  .replace("{CPU}", f"{{{CPU}}}")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        if name == "hog":
            noise = subprocess.Popen([sys.executable, "-c", hog_code])
        else:
            noise = subprocess.Popen([str(exe), "100000000", str(CPU)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
            noise.stdout.readline()
            noise.stdin.write("go\n")
            noise.stdin.flush()
        try:
            probe.update_watch(WatchSet(tgids=frozenset({waker.pid})))
            probe.poll(monotonic_ns())
            s0, t0 = host_switches(), time.monotonic()
            waker.stdin.write("go\n")
            waker.stdin.flush()
            waker.stdout.readline()
            s1, dt = host_switches(), time.monotonic() - t0
            result = probe.poll(monotonic_ns())
        finally:
            noise.kill()
            noise.wait()
            waker.communicate("q\n", timeout=30)
            probe.stop()
        delays = [e for e in result.events if e.kind == "runq_delay"]
        out[name] = {"host_switches_per_s": (s1 - s0) / dt, "runq_delay_events_per_s": len(delays) / dt,
                     "all_events_per_s": len(result.events) / dt, "lost_culprits": result.snapshot.lost_culprits}
        log(f"{name}: {out[name]}")
    return out


def irq_load(exe: Path, seconds: float, rounds: int) -> dict:
    """Datagrams/s of a loopback UDP flood on CPU with no probe, with the probe not timing that CPU's interrupts (no
    watched thread there), and timing them (a watched thread waits there); the irq programs' cost when timing. A
    busy thread sits on CPU in every variant (watched only in the last), so all see the same competition."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    port = rx.getsockname()[1]
    busy = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{CPU}}})\nwhile 1: pass"])

    def flood() -> float:
        # SCHED_FIFO: the same CPU share for the flood in every round, however busy the box
        done = subprocess.run(["chrt", "-f", "1", "taskset", "-c", str(CPU), str(exe), str(port), str(seconds)],
                              check=True, capture_output=True, text=True)
        return float(done.stdout.split()[0])

    variants = {"none": flood,
                "probe_cpu_not_timed": lambda: with_probe(SchedProbe(SchedConfig()), os.getpid(), flood),
                "probe_cpu_timed": lambda: with_probe(SchedProbe(SchedConfig()), busy.pid, flood)}
    raw: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for r in range(rounds):
            for name, fn in variants.items():
                raw[name].append(fn())
            log(f"udp round {r}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in raw.items()))
        with BpfStats():
            kernel = {"not_timed": measured(SchedProbe(SchedConfig()), os.getpid(), flood),
                      "timed": measured(SchedProbe(SchedConfig()), busy.pid, flood)}
    finally:
        busy.kill()
        busy.wait()
        rx.close()
    irq = {k: {n: p for n, p in v.items() if "irq" in n} for k, v in kernel.items()}
    med = {k: statistics.median(v) for k, v in raw.items()}
    return {"datagrams_per_s_median": med, "raw": raw,
            "ratio": {k: med[k] / med["none"] for k in med if k != "none"}, "irq_programs": irq,
            "irq_programs_cpu_share_of_one_cpu": {k: sum(p["runs_per_s"] * p["ns_per_run"] for p in v.values()) / 1e9
                                                 for k, v in irq.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--old-ref", default="90f1e1e", help="git commit of the old sched probe")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rounds-per-run", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default=str(HERE / "results" / "sched_overhead.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pp, flood = build(tmp, "sched_pingpong"), build(tmp, "udp_flood")
        old_cls, old_cfg = old_probe_class(tmp, args.old_ref)
        result = {"benchmark": "sched_overhead", "device": platform.machine(), "kernel": platform.release(),
                  "cpus": os.cpu_count(), "old_ref": args.old_ref,
                  "pingpong": pingpong(pp, args, old_cls, old_cfg),
                  "bounded_events": bounded_events(pp, args.seconds),
                  "udp_flood": irq_load(flood, args.seconds, args.rounds)}
    write_result(args.out, result)
    summary = {"new_over_old_added": result["pingpong"]["new_over_old_added"],
               "added_ns": result["pingpong"]["added_ns_per_round_trip"],
               "in_kernel_ns": result["pingpong"]["in_kernel_ns_per_round_trip_median"],
               "in_kernel_new_over_old": result["pingpong"]["in_kernel_new_over_old"],
               "bounded_events": result["bounded_events"], "udp_ratio": result["udp_flood"]["ratio"],
               "irq_cpu_share": result["udp_flood"]["irq_programs_cpu_share_of_one_cpu"]}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark loads BPF programs")
    main()
