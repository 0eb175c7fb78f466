"""The GPU workloads benchmarks/cuda_probe_check.py watches with the cuda probe, each run as a child process:
`python3 benchmarks/cuda_probe_workloads.py KIND [ARGS as JSON]`. The child sets up, prints one JSON line
({"ready": true, ...}), then answers one JSON line per command read on stdin (a JSON object), so the checker can
read the probe's counters just before and just after exactly the calls it asked for. Needs torch with CUDA.

Kinds:
  torch   N graph replays, M timed syncs each after a known-length spin kernel, K copies of known sizes
          (pinned memory, non_blocking: one cudaMemcpyAsync each, no hidden sync); answers the counts it made and
          its own timing of every sync.
  launch  {"launches": L} L tiny kernel launches (torch.cuda._sleep(1)), {"syncs": S} S empty device syncs;
          answers ns per call (the per-hit cost is the difference watched vs not watched).
  engine  the bundled engine, eager decode (--no-cuda-graphs) of one request; {"steps": S, "profile": bool}
          answers each step's CLOCK_MONOTONIC window and thread, and with "profile" the launch calls the torch
          profiler (CUPTI) saw inside each step.
  gemm    a competing process: bf16 GEMMs back to back until killed.
"""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import torch

LAUNCH_CALLS = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cudaLaunchCooperativeKernel", "cuLaunchKernel",
                "cuLaunchKernelEx", "cuLaunchCooperativeKernel"}  # and their _ptsz forms


def reply(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def commands():
    for line in sys.stdin:
        yield json.loads(line)


def spin_cycles(ms: float) -> int:
    """Clock cycles for torch.cuda._sleep to spin about `ms` milliseconds on this GPU."""
    props = torch.cuda.get_device_properties(0)
    rate_khz = getattr(props, "clock_rate", 0) or 1_700_000  # kHz (H100/H200 boost ~1.98 GHz)
    return int(ms * rate_khz)


def run_torch(a: dict) -> None:
    n, m, sizes = a.get("graphs", 50), a.get("syncs", 20), a.get("sizes", [4096, 1 << 20, 3 << 20, 12345])
    k = a.get("copies", 20)
    x = torch.zeros(1 << 16, device="cuda")
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        x.add_(1)  # warm the kernel before capture
        with torch.cuda.graph(g):
            x.mul_(1.0001).add_(1)
    torch.cuda.current_stream().wait_stream(s)
    host = [torch.empty(n_bytes, dtype=torch.uint8).pin_memory() for n_bytes in sizes]
    dev = [torch.empty(n_bytes, dtype=torch.uint8, device="cuda") for n_bytes in sizes]
    cycles = spin_cycles(a.get("wait_ms", 2.0))
    g.replay()  # each kind of call once before the measured part (lazy initialisation stays out of it)
    dev[0].copy_(host[0], non_blocking=True)
    host[0].copy_(dev[0], non_blocking=True)
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize()
    reply({"ready": True})
    for _ in commands():
        for _ in range(n):
            g.replay()
        waits = []
        for _ in range(m):
            torch.cuda._sleep(cycles)  # one kernel launch: the GPU is busy for ~wait_ms when the sync starts
            t0 = time.perf_counter_ns()
            torch.cuda.synchronize()
            waits.append(time.perf_counter_ns() - t0)
        h2d = d2h = 0
        for i in range(k):
            j = i % len(sizes)
            if i % 2 == 0:
                dev[j].copy_(host[j], non_blocking=True)
                h2d += sizes[j]
            else:
                host[j].copy_(dev[j], non_blocking=True)
                d2h += sizes[j]
        t0 = time.perf_counter_ns()
        torch.cuda.synchronize()
        waits.append(time.perf_counter_ns() - t0)
        reply({"graph_launches": n, "launches": m, "device_syncs": m + 1, "sync_wait_ns": waits,
               "h2d": {"count": (k + 1) // 2, "bytes": h2d}, "d2h": {"count": k // 2, "bytes": d2h}})


def run_launch(a: dict) -> None:
    torch.cuda._sleep(1)
    torch.cuda.synchronize()
    reply({"ready": True})
    for cmd in commands():
        n = cmd.get("launches", 0) or cmd.get("syncs", 0)
        fn = (lambda: torch.cuda._sleep(1)) if "launches" in cmd else torch.cuda.synchronize
        torch.cuda.synchronize()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        dt = time.perf_counter_ns() - t0
        torch.cuda.synchronize()
        reply({"ns_per_call": dt / max(n, 1), "calls": n})


def _engine(a: dict):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_engine_decode import build_engine  # noqa: PLC0415

    from gpusleuth.engine.sequence import SamplingParams  # noqa: PLC0415

    args = SimpleNamespace(device=a.get("device", "cuda"), dtype=a.get("dtype", "bfloat16"),
                           step_batches=[a.get("batch", 1)], prompt_len=a.get("prompt_len", 128), no_cuda_graphs=True,
                           preset=a.get("preset", "llama3-8b"))
    engine = build_engine(args, a.get("kernels", "fused"))
    params = SamplingParams(max_tokens=1024, temperature=0.0, is_ignore_eos=True)  # prompt + 1024 < 2048
    vocab = min(engine.runner.cfg.vocab_size, 1000)
    for b in range(args.step_batches[0]):
        engine.add_request(f"r{b}", [(7 * i + b) % (vocab - 3) + 3 for i in range(args.prompt_len)], params)
    for _ in range(10):  # prefill and warm decode steps
        engine.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return engine


def _steps(engine, n: int, annotate) -> list[dict]:
    out = []
    for k in range(n):
        with annotate(f"gs_step_{k}"):
            t0 = time.monotonic_ns()
            engine.step()
            out.append({"start_ns": t0, "end_ns": time.monotonic_ns(), "tid": threading.get_native_id()})
    return out


def _profiler_launches(trace: Path, n: int) -> list[int]:
    """Launch API calls (runtime and driver, as CUPTI reports them) inside each gs_step_<k> annotation."""
    events = json.loads(trace.read_text()).get("traceEvents", [])
    steps = {e["name"]: (e["ts"], e["ts"] + e["dur"]) for e in events
             if e.get("cat") == "user_annotation" and e.get("name", "").startswith("gs_step_")}
    calls = sorted(e["ts"] for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")
                   and e.get("name", "").removesuffix("_ptsz") in LAUNCH_CALLS)
    counts = []
    for k in range(n):
        lo, hi = steps.get(f"gs_step_{k}", (0, -1))
        counts.append(sum(1 for t in calls if lo <= t <= hi))
    return counts


def run_engine(a: dict) -> None:
    engine = _engine(a)
    reply({"ready": True})
    for cmd in commands():
        n = cmd["steps"]
        if not cmd.get("profile"):
            reply({"steps": _steps(engine, n, torch.profiler.record_function)})
            continue
        acts = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=acts) as prof:
            steps = _steps(engine, n, torch.profiler.record_function)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        trace = Path(tempfile.mkdtemp()) / "trace.json"
        prof.export_chrome_trace(str(trace))
        for s, c in zip(steps, _profiler_launches(trace, n)):
            s["profiler_launches"] = c
        trace.unlink()
        reply({"steps": steps})


def run_gemm(a: dict) -> None:
    n = a.get("n", 8192)
    x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    reply({"ready": True})
    while True:
        for _ in range(20):
            x = torch.mm(x, y).clamp_(-1, 1)
        torch.cuda.synchronize()


if __name__ == "__main__":
    kind, arg = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    {"torch": run_torch, "launch": run_launch, "engine": run_engine, "gemm": run_gemm}[kind](arg)
