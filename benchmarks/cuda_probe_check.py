"""The cuda probe's acceptance checks and cost figures (issue 16), one JSON file per stage under RESULTS_DIR.

    sudo python3 benchmarks/cuda_probe_check.py RESULTS_DIR [--stages hit_cost,idle,torch,engine,overhead]

Stages (the first two run anywhere with gcc and root; the others need a GPU and torch):
  hit_cost    ns per uprobe hit on the fake libraries (probes/cuda/fake_cuda.c) built two ways: functions that start
              with an instruction the kernel single-steps (-O2: `xor eax, eax`) and with `push rbp` (-O0: the kernel
              emulates it, no single step; in a KVM guest that is ~50x cheaper); per launch counted,
              per launch traced (one event each) and per sync (entry + return + event); the launch rate at which each
              costs 1 % of one core. On a GPU host also the real libcuda (`launch` workload, watched vs not).
  idle        the probe's own CPU per second while it watches processes that use no CUDA, and its start time.
  torch       a torch script: N graph launches, M syncs after known spin kernels, K copies of known sizes: the
              probe's counts and bytes must equal the script's, its sync wait within 5 % of the script's timing.
  engine      the bundled engine, eager decode: launches per step from the probe vs the torch profiler's (CUPTI);
              then the same decode alone and beside a GEMM process: the share of GPU-bound host steps.
  overhead    the engine server under streaming load with the agent running its default probes vs the same plus
              cuda, interleaved rounds, with CUDA graphs and eager (--agent: the agent command).
Run by benchmarks/gpu_session.sh's `cuda` stage, which sets the bundled bcc's library paths.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import log, write_result  # noqa: E402
from gpusleuth.probes.base import WatchSet  # noqa: E402
from gpusleuth.probes.cuda import fakelib  # noqa: E402
from gpusleuth.probes.cuda.config import CudaConfig  # noqa: E402
from gpusleuth.probes.cuda.probe import CudaProbe  # noqa: E402
from gpusleuth.probes.records import monotonic_ns  # noqa: E402

WORKLOADS = Path(__file__).with_name("cuda_probe_workloads.py")


@contextmanager
def started_probe(**config):
    probe = CudaProbe(CudaConfig(**{"rescan_interval_s": 0.1, **config}))
    probe.start()
    try:
        yield probe
    finally:
        probe.stop()


class Child:
    """A workload process (cuda_probe_workloads.py KIND): one JSON line per command."""

    def __init__(self, kind: str, **args) -> None:
        env = dict(os.environ)
        if "GS_CHILD_LD_LIBRARY_PATH" in env:  # the bundled bcc's libraries are for this process only
            env["LD_LIBRARY_PATH"] = env["GS_CHILD_LD_LIBRARY_PATH"]
        self.proc = subprocess.Popen([sys.executable, str(WORKLOADS), kind, json.dumps(args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.pid = self.proc.pid
        self.kind = kind
        self.ready = self._answer()

    def _answer(self) -> dict:
        """The next JSON line (libraries may print other lines to stdout)."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"workload {self.kind} exited with {self.proc.wait()}")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def watch(probe: CudaProbe, pids: set[int], kinds: tuple[str, ...] = ("driver",)):
    """Watch `pids` and poll until each maps and has uprobes on `kinds`; the snapshot."""
    probe.update_watch(WatchSet(tgids=frozenset(pids)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        snap = probe.poll(monotonic_ns()).snapshot
        if all(p in snap.processes and all(snap.processes[p].libraries.get(k) and
                                           snap.processes[p].libraries[k].uprobes for k in kinds) for p in pids):
            return snap
        time.sleep(0.1)
    raise SystemExit(f"the probe did not attach to {pids} ({kinds}) within 60 s")


def interleaved(measure, rounds: int) -> dict:
    """Median of `measure(mode)` per mode over rounds that alternate the modes' order."""
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        modes = ["off", "count", "trace"] if r % 2 == 0 else ["trace", "count", "off"]
        for mode in modes:
            samples.setdefault(mode, []).append(measure(mode))
    return {m: statistics.median(v) for m, v in samples.items()}


def hit_cost_fake(rounds: int) -> dict:
    """ns per hit on the fake libraries, both entry-instruction kinds."""
    out = {}
    for variant, cflags in (("single_stepped_entry", ("-O2",)), ("emulated_push_entry", ("-O0",))):
        directory = fakelib.build(Path(tempfile.mkdtemp(prefix="gs-fakecuda-")), cflags)
        with started_probe() as probe, fakelib.FakeCudaProcess(directory) as fake:
            n = 20_000 if variant == "single_stepped_entry" else 100_000

            def measure(mode: str, loop: str = "app_launch_loop", extra: tuple = ()) -> float:
                probe.update_watch(WatchSet(tgids=frozenset() if mode == "off" else frozenset({fake.pid})))
                probe.poll(monotonic_ns())
                probe.trace_launches(60 if mode == "trace" else 0)
                ns = fake.loop(loop, n, 1, *extra)["ns"] / n
                probe.trace_launches(0)
                probe.poll(monotonic_ns())  # drain the traced events
                return ns

            launch = interleaved(measure, rounds)
            sync = interleaved(lambda mode: measure("off" if mode == "off" else "count", "app_steps", (0,)), rounds)
        per_launch, per_trace = launch["count"] - launch["off"], launch["trace"] - launch["off"]
        per_sync = sync["count"] - sync["off"]
        out[variant] = {"cflags": list(cflags), "calls_per_round": n, "ns_per_call": launch,
                        "ns_per_launch_counted": per_launch, "ns_per_launch_traced": per_trace,
                        "ns_per_sync": per_sync,
                        "launches_per_s_for_1pct_of_a_core_counted": 1e7 / per_launch if per_launch > 0 else None,
                        "launches_per_s_for_1pct_of_a_core_traced": 1e7 / per_trace if per_trace > 0 else None}
        log(f"hit cost ({variant}): launch counted {per_launch:.0f} ns, traced {per_trace:.0f} ns, "
            f"sync {per_sync:.0f} ns")
    return out


def hit_cost_real(rounds: int) -> dict:
    """ns per hit on the real libcuda (a tiny kernel launch, an empty sync), watched vs not."""
    child = Child("launch")
    try:
        with started_probe() as probe:
            def measure(mode: str, what: str = "launches") -> float:
                probe.update_watch(WatchSet(tgids=frozenset() if mode == "off" else frozenset({child.pid})))
                probe.poll(monotonic_ns())
                probe.trace_launches(60 if mode == "trace" else 0)
                ns = child.ask(**{what: 20_000})["ns_per_call"]
                probe.trace_launches(0)
                probe.poll(monotonic_ns())
                return ns

            watch(probe, {child.pid})
            launch = interleaved(measure, rounds)
            sync = interleaved(lambda mode: measure("off" if mode == "off" else "count", "syncs"), rounds)
        entries = entry_bytes(child.pid)
    finally:
        child.close()
    per_launch, per_trace = launch["count"] - launch["off"], launch["trace"] - launch["off"]
    log(f"hit cost (libcuda): launch counted {per_launch:.0f} ns, traced {per_trace:.0f} ns")
    return {"ns_per_call": launch, "ns_per_launch_counted": per_launch, "ns_per_launch_traced": per_trace,
            "ns_per_sync": sync["count"] - sync["off"],
            "launches_per_s_for_1pct_of_a_core_counted": 1e7 / per_launch if per_launch > 0 else None,
            "launches_per_s_for_1pct_of_a_core_traced": 1e7 / per_trace if per_trace > 0 else None,
            "entry_bytes": entries}


def entry_bytes(pid: int) -> dict[str, str]:
    """The first bytes of the hot libcuda functions (55 = push rbp, emulated by the kernel; f3 0f 1e fa = endbr64,
    single-stepped): what decides the cost per hit."""
    from gpusleuth.probes.cuda.discovery import SymbolCache, host_path, mapped_libraries  # noqa: PLC0415

    path = mapped_libraries(pid).get("driver")
    if path is None:
        return {}
    out = {}
    with open(host_path(pid, path), "rb") as f:
        for r in SymbolCache().resolve(host_path(pid, path), "driver"):
            if r.symbol in ("cuLaunchKernel", "cuLaunchKernelEx", "cuGraphLaunch", "cuStreamSynchronize",
                            "cuMemcpyAsync"):
                f.seek(r.offset)
                out[r.symbol] = f.read(8).hex()
    return out


def stage_hit_cost(args) -> dict:
    result = {"fake": hit_cost_fake(args.rounds)}
    if args.has_gpu:
        result["libcuda"] = hit_cost_real(args.rounds)
    return result


def stage_idle(args) -> dict:
    """CPU of the probe's polls while it watches processes that use no CUDA: python processes that imported torch
    (the default watch matches python*; libtorch_cpu.so gets the gloo uprobes). Defaults otherwise (rescan 2 s)."""
    code = "import sys, torch; print('ok', flush=True); sys.stdin.read()"  # torch: a big /proc/PID/maps to read
    idle = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(args.idle_processes)]
    for p in idle:
        p.stdout.readline()
    try:
        t0 = time.perf_counter()
        with started_probe(rescan_interval_s=2.0) as probe:
            start_s = time.perf_counter() - t0
            probe.update_watch(WatchSet(tgids=frozenset(p.pid for p in idle)))
            c0 = time.thread_time()
            uprobes = probe.poll(monotonic_ns()).snapshot.uprobes  # the first poll attaches
            attach_ms = 1e3 * (time.thread_time() - c0)
            cpu, polls, t_end = 0.0, 0, time.monotonic() + args.idle_seconds
            while time.monotonic() < t_end:
                time.sleep(1.0)
                c0 = time.thread_time()
                probe.poll(monotonic_ns())
                cpu += time.thread_time() - c0
                polls += 1
    finally:
        for p in idle:
            p.kill()
            p.wait()
    log(f"idle: {1e3 * cpu / polls:.2f} ms CPU per 1 s poll watching {len(idle)} processes; attach {attach_ms:.0f} ms")
    return {"watched_processes": args.idle_processes, "uprobes_attached": uprobes, "attach_poll_cpu_ms": attach_ms,
            "polls": polls, "poll_interval_s": 1.0, "cpu_ms_per_poll": 1e3 * cpu / polls,
            "cpu_pct_of_a_core": 100 * cpu / (polls * 1.0), "probe_start_s": start_s}


def delta(before, after, pid: int) -> dict:
    """What the probe counted for `pid` between two snapshots."""
    a, b = before.processes[pid], after.processes[pid]
    syncs = {k: {"count": s.count - a.syncs.get(k, type(s)()).count,
                 "wait_ns": s.duration.sum_ns - (a.syncs[k].duration.sum_ns if k in a.syncs else 0)}
             for k, s in b.syncs.items()}
    copies = {k: {"count": s.count - (a.copies[k].count if k in a.copies else 0),
                  "bytes": s.bytes - (a.copies[k].bytes if k in a.copies else 0)} for k, s in b.copies.items()}
    return {"launches": b.launches - a.launches, "graph_launches": b.graph_launches - a.graph_launches,
            "syncs": syncs, "copies": copies}


def stage_torch(args) -> dict:
    child = Child("torch", graphs=args.graphs, syncs=args.syncs, copies=args.copies)
    try:
        with started_probe() as probe:
            before = watch(probe, {child.pid}, ("driver", "runtime"))
            made = child.ask(go=True)
            after = probe.poll(monotonic_ns()).snapshot
            libraries = {k: {"path": v.path, "symbols": v.symbols} for k, v in after.processes[child.pid].libraries.items()}
    finally:
        child.close()
    got = delta(before, after, child.pid)
    own_wait = sum(made["sync_wait_ns"])
    probe_wait = sum(s["wait_ns"] for s in got["syncs"].values())
    checks = {
        "graph_launches_exact": got["graph_launches"] == made["graph_launches"],
        "launches_exact": got["launches"] == made["launches"],
        "device_syncs_exact": got["syncs"].get("device", {}).get("count") == made["device_syncs"],
        "h2d_exact": got["copies"].get("h2d") == made["h2d"],
        "d2h_exact": got["copies"].get("d2h") == made["d2h"],
        "sync_wait_within_5pct": abs(probe_wait - own_wait) <= 0.05 * own_wait,
    }
    log(f"torch: {checks}")
    return {"made": made, "probe": got, "probe_wait_ns": probe_wait, "own_wait_ns": own_wait,
            "libraries": libraries, "checks": checks, "passed": all(checks.values())}


def engine_steps(probe: CudaProbe, child: Child, steps: int, profile: bool) -> tuple[list, list]:
    """The engine child's steps, and the probe's cuda.sync events while they ran."""
    probe.poll(monotonic_ns())
    answer = child.ask(steps=steps, profile=profile)
    syncs = [e for e in probe.poll(monotonic_ns()).events if e.kind == "cuda.sync"]
    return answer["steps"], syncs


def stage_engine(args) -> dict:
    """Eager decode of the bundled engine: launches per step vs the torch profiler's count; then GPU-bound host
    steps alone vs beside a competing GEMM process (one model load for both)."""
    from gpusleuth.probes.cuda.join import Step, launches_per_step  # noqa: PLC0415

    child, gemm = Child("engine", preset=args.preset), None
    try:
        with started_probe() as probe:
            watch(probe, {child.pid})
            steps, syncs = engine_steps(probe, child, args.steps, profile=True)
            alone = bound_share(probe, child, args.steps)
            gemm = Child("gemm")
            time.sleep(2)
            shared = bound_share(probe, child, args.steps)
    finally:
        child.close()
        if gemm is not None:
            gemm.close()
    ours = launches_per_step([Step(child.pid, s["tid"], s["start_ns"], s["end_ns"]) for s in steps], syncs)
    theirs = [s["profiler_launches"] for s in steps]
    equal = sum(a == b for a, b in zip(ours, theirs))
    log(f"engine: launches per step equal in {equal}/{len(steps)} steps; probe {ours[:5]}..., profiler {theirs[:5]}")
    log(f"engine: GPU-bound share alone {alone['gpu_bound_share']:.2f}, with GEMM {shared['gpu_bound_share']:.2f}")
    checks = {"launches_per_step_equal": equal == len(steps),
              "gemm_makes_steps_gpu_bound": shared["gpu_bound_share"] >= 0.8
              and shared["gpu_bound_share"] > alone["gpu_bound_share"]}
    return {"preset": args.preset, "steps": len(steps), "probe_launches_per_step": ours,
            "profiler_launches_per_step": theirs, "steps_equal": equal, "totals": [sum(ours), sum(theirs)],
            "alone": alone, "with_gemm": shared, "checks": checks, "passed": all(checks.values())}


def bound_share(probe: CudaProbe, child: Child, steps: int) -> dict:
    """Host steps (sync to sync) of the engine's decode, and the share the probe classed GPU-bound."""
    _, syncs = engine_steps(probe, child, steps, profile=False)
    bounds = [e.attrs["bound"] for e in syncs if "bound" in e.attrs]
    shares = [e.attrs["wait_ns"] / e.attrs["host_ns"] for e in syncs if e.attrs.get("host_ns")]
    return {"host_steps": len(bounds), "gpu_bound_share": bounds.count("gpu") / max(len(bounds), 1),
            "median_sync_wait_share": statistics.median(shares) if shares else None}


def stage_overhead(args) -> dict:
    from cuda_probe_overhead import run  # noqa: PLC0415  (needs torch, aiohttp: only here)

    return run(args)


STAGES = {"hit_cost": stage_hit_cost, "idle": stage_idle, "torch": stage_torch, "engine": stage_engine,
          "overhead": stage_overhead}
GPU_STAGES = {"torch", "engine", "overhead"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="folder for the JSON files")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--preset", default="llama3-8b", help="engine model for the engine and overhead stages")
    p.add_argument("--steps", type=int, default=60, help="decode steps per engine measurement")
    p.add_argument("--graphs", type=int, default=50)
    p.add_argument("--syncs", type=int, default=20)
    p.add_argument("--copies", type=int, default=20)
    p.add_argument("--idle-processes", type=int, default=8)
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--agent", default=str(Path(sys.executable).parent / "agent"), help="the agent command")
    p.add_argument("--overhead-rounds", type=int, default=3)
    p.add_argument("--overhead-requests", type=int, default=8)
    args = p.parse_args()
    args.has_gpu = Path("/dev/nvidia0").exists()
    device = "cpu"
    if args.has_gpu:
        device = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                                capture_output=True, text=True).stdout.strip() or "gpu"
    summary = {}
    for name in args.stages.split(","):
        if name in GPU_STAGES and not args.has_gpu:
            log(f"{name}: skipped (no GPU)")
            continue
        t0 = time.monotonic()
        try:
            result = {"benchmark": f"cuda_probe_{name}", "device": device, **STAGES[name](args)}
        except (SystemExit, Exception) as exc:  # one failing stage must not lose the others' results
            result = {"benchmark": f"cuda_probe_{name}", "device": device, "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.monotonic() - t0, 1)
        write_result(Path(args.results) / f"cuda_{name}.json", result)
        summary[name] = result.get("passed", "error" if "error" in result else "measured")
        log(f"{name}: {summary[name]} in {result['seconds']} s; wrote {args.results}/cuda_{name}.json")
    write_result(Path(args.results) / "cuda_summary.json", {"device": device, "stages": summary})


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root: the cuda probe loads BPF programs")
    main()
