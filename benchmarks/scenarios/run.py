"""The fault-injection suite: how often does the agent name the real cause of a slow request?

A real agent (its own config in a temp dir, every probe), the bundled engine (tiny preset, in its own network
namespace and cgroups, pinned to its CPU) and a load generator with a fixed arrival process; one fault per window
with its ground-truth cause and culprit, clean gaps between; then the agent's verdict on every request that
overlapped each window and on a sample of clean ones. Run as root:
  python benchmarks/scenarios/run.py --out results.json                       # everything, 5 reps, low+high
  python benchmarks/scenarios/run.py --only cpu_hog_fifo,sigstop --repeat 2 --intensity high --out r.json
  python benchmarks/scenarios/run.py --venv /work/baseline/.venv --out base.json   # another checkout's agent
  python benchmarks/scenarios/run.py --ci --out ci.json                        # the CI subset
  python benchmarks/scenarios/run.py --gpu --out gpu.json                      # on a GPU host: engine on cuda
--break-verdicts starts the agent with a hook that empties every verdict (shows that scores can fail).
Scores and the report: score.py and report.py (also runnable alone on a results file).
"""
from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import score  # noqa: E402
from hostcpu import HostMeter  # noqa: E402
from procs import Tools  # noqa: E402
from stack import Stack, StackOptions  # noqa: E402
from window import Ctx, Timing, calibrate, run_window  # noqa: E402
from agentq import AgentQuery  # noqa: E402

ORDER = ["clean", "cpu_hog_fifo", "cpu_hog_weight", "sigstop", "cgroup_freeze", "cpu_quota", "softirq",
         "scheduler_sleep", "fsync_drill", "fsync_storm", "io_throttle", "memory_squeeze", "gc_pause",
         "gil_contention", "burst", "kv_exhaustion", "net_shaping", "net_bulk", "gpu_contention", "gpu_clocks",
         "tp_straggler"]
CI_SCENARIOS = ["clean", "cpu_hog_fifo", "sigstop", "cpu_quota", "scheduler_sleep"]
EXIT_USAGE, EXIT_ENV = 2, 3


def load_faults(names: list[str] | None) -> list:
    unknown = set(names or []) - set(ORDER)
    if unknown:
        raise SystemExit(f"--only: unknown scenario(s) {sorted(unknown)}; known: {', '.join(ORDER)}")
    return [importlib.import_module(f"faults.{n}").FAULT for n in ORDER if not names or n in names]


def levels_of(fault, wanted: list[str]) -> list[str]:
    """The intensities to run: the asked ones it has, else (clean, observe-only) all it has."""
    have = [lv for lv in fault.levels if lv in wanted]
    return have or list(fault.levels)


def tools_from(args: argparse.Namespace) -> Tools:
    if args.venv:
        venv = Path(args.venv)
        tools = Tools(str(venv / "bin" / "agent"), str(venv / "bin" / "python"))
    else:
        tools = Tools(args.agent or str(Path(sys.executable).parent / "agent"), args.python or sys.executable)
    if args.checkout:  # an uninstalled checkout: a link named gpusleuth on PYTHONPATH (benchmarks/checkout_env.sh)
        link = Path(tempfile.mkdtemp(prefix="gs-scn-src-"))
        atexit.register(shutil.rmtree, link, True)
        (link / "gpusleuth").symlink_to(Path(args.checkout).resolve())
        tools.env["PYTHONPATH"] = ":".join(p for p in (str(link), os.environ.get("PYTHONPATH", "")) if p)
    for path in (tools.agent, tools.python):
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{path} is not executable: check --venv / --agent / --python")
    return tools


def provenance(tools: Tools) -> dict:
    """Which checkout the engine's Python and the agent's Python import gpusleuth from, and its commit."""
    out = {"agent": tools.agent, "python": tools.python}
    agent_py = Path(tools.agent).read_text(errors="replace").splitlines()[0].removeprefix("#!").strip()
    code = "import gpusleuth.agent, pathlib; print(pathlib.Path(gpusleuth.agent.__file__).resolve().parent.parent)"
    for key, py in (("engine_checkout", tools.python), ("agent_checkout", agent_py)):
        res = subprocess.run([py, "-c", code], capture_output=True, text=True, env=tools.environ())
        out[key] = res.stdout.strip() or f"? {res.stderr.strip()[-200:]}"
    root = out["agent_checkout"]
    git = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"], capture_output=True, text=True)
    out["agent_commit"] = git.stdout.strip()
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help=f"comma-separated scenarios ({', '.join(ORDER)})")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--intensity", default="low,high")
    p.add_argument("--out", required=True)
    p.add_argument("--report-dir", default="", help="text table and PNGs here (default: beside --out)")
    p.add_argument("--report-name", default="table", help="file stem of the table and PNGs")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--merge-into", default="", help="fold this run's scenarios into an earlier results file")
    p.add_argument("--venv", default="", help="run DIR/bin/agent and DIR/bin/python -m gpusleuth.engine")
    p.add_argument("--agent", default="")
    p.add_argument("--python", default="")
    p.add_argument("--checkout", default="", help="an uninstalled checkout to put on PYTHONPATH as gpusleuth")
    p.add_argument("--gpu", action="store_true", help="engine on cuda; GPU rows run")
    p.add_argument("--ci", action="store_true", help=f"the CI subset: {', '.join(CI_SCENARIOS)}, high, once")
    p.add_argument("--break-verdicts", action="store_true", default=bool(os.environ.get("GS_SCENARIOS_BREAK")))
    p.add_argument("--gap-s", type=float, default=4.0)
    p.add_argument("--fault-s", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=5.0, help="steady requests per second")
    p.add_argument("--engine-cpus", default="", help="CPUs of the engine (default: the last one)")
    p.add_argument("--side-cpus", default="", help="CPUs of the agent, load and actors (default: CPU 0)")
    args = p.parse_args(argv)
    if args.ci:
        args.only, args.repeat, args.intensity = ",".join(CI_SCENARIOS), 1, "high"
    return args


def cpus(text: str, default: list[int]) -> list[int]:
    return [int(c) for c in text.split(",") if c] if text else default


def stack_options(args: argparse.Namespace, faults: list) -> StackOptions:
    ncpu = os.cpu_count() or 1
    return StackOptions(tools=tools_from(args), device="cuda" if args.gpu else "cpu",
                        engine_cpus=cpus(args.engine_cpus, [ncpu - 1]), side_cpus=cpus(args.side_cpus, [0]),
                        load_args=["--rate", str(args.rate)], is_verdicts_broken=args.break_verdicts,
                        needs={n for f in faults for n in f.needs})


def new_results(args: argparse.Namespace, opts: StackOptions, timing: Timing, wanted: list[str]) -> dict:
    return {"suite": "scenarios", "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv[1:],
            "provenance": provenance(opts.tools), "host": report.host_facts(), "windows": [], "skipped": [],
            "options": {"repeat": args.repeat, "intensity": wanted, "gap_s": timing.gap_s, "fault_s": timing.fault_s,
                        "rate": args.rate, "engine_cpus": opts.engine_cpus, "side_cpus": opts.side_cpus,
                        "device": opts.device, "verdicts_broken": args.break_verdicts}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a TERMed run still cleans up (finally blocks)
    if os.geteuid() != 0:
        print("run as root: the agent loads BPF programs; faults use cgroups, namespaces and tc", file=sys.stderr)
        return EXIT_ENV
    faults = load_faults([n for n in args.only.split(",") if n] or None)
    wanted = [lv for lv in args.intensity.split(",") if lv]
    opts, timing = stack_options(args, faults), Timing(gap_s=args.gap_s, fault_s=args.fault_s)
    if opts.side_cpus:  # the runner's own work (polling, explain answers) stays off the engine's CPU
        os.sched_setaffinity(0, opts.side_cpus)
    results = new_results(args, opts, timing, wanted)
    stack = Stack(opts)
    try:
        stack.open()
        results["host"].update(cgroup_version=stack.cg_engine.version if stack.cg_engine else None,
                               stack_errors=stack.errors, made=stack.made())
        ctx = Ctx(stack, AgentQuery(stack.agent.client), HostMeter(stack.our_pids, opts.engine_cpus), timing)
        for setup in dict.fromkeys(f.engine for f in faults):
            run_setup(ctx, setup, [f for f in faults if f.engine == setup], args, wanted, results)
    finally:
        stack.close()
    if args.merge_into:
        results = merge(Path(args.merge_into), results)
    results["scores"] = score.score_all(results)
    write(Path(args.out), results)
    report.write_all(results, Path(args.report_dir or Path(args.out).with_suffix("")), args.report_name,
                     plots=not args.no_plots)
    return 0


def run_setup(ctx: Ctx, setup: str, faults: list, args, wanted: list[str], results: dict) -> None:
    """One engine setup: start it, warm up, calibrate burst shapes, then every scenario's windows."""
    faults = [f for f in faults if not skipped(f, ctx.stack, results)]  # before the engine: GPUs, cgroups, ...
    if not faults:
        return
    ctx.stack.start_engine(setup)
    time.sleep(ctx.timing.warmup_s)
    calibrate(ctx, {f.shape[0]: f.shape[1:] for f in faults if f.shape})
    time.sleep(ctx.timing.gap_s)  # nothing of the calibration left in the first clean gap
    for fault in faults:
        if skipped(fault, ctx.stack, results):  # now the engine's drills are known too
            continue
        try:
            run_scenario(ctx, fault, args, wanted, results)
        except Exception as exc:  # one scenario's failure (an actor that would not start) leaves the others to run
            results.setdefault("errors", []).append({"scenario": fault.name, "error": repr(exc)})
            print(f"error in {fault.name}: {exc!r}", flush=True)


def run_scenario(ctx: Ctx, fault, args, wanted: list[str], results: dict) -> None:
    """Every repetition x intensity of one scenario, between its setup and teardown."""
    fault.setup(ctx.stack)
    ctx.clean_e2e.clear()  # a scenario's setup may change what normal is (its light fsyncs, its slow link)
    gap_start = time.monotonic_ns()
    try:
        for rep in range(args.repeat):
            for level in levels_of(fault, wanted):
                win = run_window(ctx, fault, level, rep, gap_start)
                gap_start = time.monotonic_ns()  # the next clean gap starts once this window's backlog drained
                results["windows"].append(win)
                print(score.window_line(win), flush=True)
                write(Path(args.out), results)
    finally:
        fault.teardown(ctx.stack)


def merge(base_path: Path, results: dict) -> dict:
    """`results` folded into the results file at `base_path`: its scenarios replace the base's, and each window
    keeps the index of the run (agent, engine, argv) that made it."""
    base = json.loads(base_path.read_text())
    names = {w["scenario"] for w in results["windows"]} | {s["scenario"] for s in results["skipped"]}
    runs = base.setdefault("runs", [{k: base[k] for k in ("argv", "provenance", "started")}])
    runs.append({k: results[k] for k in ("argv", "provenance", "started")})
    base["windows"] = [w for w in base["windows"] if w["scenario"] not in names] + [
        {**w, "run": len(runs) - 1} for w in results["windows"]]
    base["skipped"] = [s for s in base["skipped"] if s["scenario"] not in names] + results["skipped"]
    return base


def skipped(fault, stack: Stack, results: dict) -> bool:
    reason = fault.skip_reason(stack)
    if reason:
        results["skipped"].append({"scenario": fault.name, "cause": fault.cause, "reason": reason})
        print(f"skip {fault.name}: {reason}", flush=True)
    return bool(reason)


def write(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, separators=(",", ":"), default=str) + "\n")  # ~25 KB a window
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
