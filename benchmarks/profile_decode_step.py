"""Where a batch-1 decode step's time goes on the GPU: per-kernel time and the idle gaps between steps.

Runs the whole engine (as bench_engine_decode's engine row does) under torch.profiler for --steps decode steps and
reads the kernels back from the trace: GPU busy time per step, the idle time between the end of one step's work and
the start of the next (host overhead the GPU waits for), and the kernels ranked by time per step. The gap between
bench_engine_decode's model_step row and its engine row is the sum of those idle gaps.

    python benchmarks/profile_decode_step.py --preset llama3-8b --out benchmarks/results/profile_decode_step.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import torch

from bench_engine_decode import build_engine, log
from gpusleuth.engine.config import EngineConfig, ModelSource
from gpusleuth.engine.engine import LLMEngine
from gpusleuth.engine.sequence import SamplingParams
from gpusleuth.engine.spans import SpanEmitter
from gpusleuth.engine.tokenizer import load_tokenizer
from gpusleuth.engine.workers import LaunchSpec, start_ranks


def kernels_from_trace(path: Path) -> list[tuple[float, float, str]]:
    """(start µs, end µs, name) of every GPU kernel and memcpy/memset in a chrome trace, by start."""
    trace = json.loads(path.read_text())
    out = [(e["ts"], e["ts"] + e["dur"], e["name"]) for e in trace.get("traceEvents", [])
           if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    return sorted(out)


def short_name(name: str) -> str:
    name = re.sub(r"<.*", "", name)  # templates
    return name[:90]


def summarise(kernels: list[tuple[float, float, str]], steps: int) -> dict:
    busy, gaps, end = 0.0, [], None
    for s, e, _ in kernels:
        if end is not None and s > end:
            gaps.append(s - end)
        busy += e - s if end is None or s >= end else max(0.0, e - end)
        end = e if end is None else max(end, e)
    span = kernels[-1][1] - kernels[0][0]
    per_kernel: dict[str, list[float]] = defaultdict(list)
    for s, e, n in kernels:
        per_kernel[short_name(n)].append(e - s)
    big_gaps = sorted(gaps, reverse=True)
    return {"steps": steps, "window_us": span, "gpu_busy_us": busy, "gpu_idle_us": span - busy,
            "busy_us_per_step": busy / steps, "idle_us_per_step": (span - busy) / steps,
            "gaps_over_5us_per_step": sum(1 for g in gaps if g > 5) / steps,
            "largest_gaps_us": [round(g, 1) for g in big_gaps[:2 * steps]],
            "median_gap_us": statistics.median(gaps) if gaps else 0.0,
            "kernels": sorted(({"name": n, "us_per_step": sum(d) / steps, "calls_per_step": len(d) / steps,
                                "mean_us": sum(d) / len(d)} for n, d in per_kernel.items()),
                              key=lambda k: -k["us_per_step"])[:40]}


def profile_steps(engine: LLMEngine, args, trace: Path) -> None:
    prompt = [(7 * i) % 1000 + 3 for i in range(args.prompt_len)]
    params = SamplingParams(max_tokens=args.steps + 64, temperature=0.0, is_ignore_eos=True)
    engine.add_request("warm", prompt, params)
    for _ in range(20):  # prefill + warm decode steps (graphs replayed, allocator settled)
        engine.step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            engine.step()
        torch.cuda.synchronize()
    prof.export_chrome_trace(str(trace))
    engine.abort("warm")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama3-8b")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--kernels", default="fused")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--layers", type=int, default=0, help="layer subset (0: the preset's)")
    p.add_argument("--out", default="benchmarks/results/profile_decode_step.json")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a GPU (the trace is of CUDA kernels)")
    args.device, args.step_batches, args.no_cuda_graphs = "cuda", [1], False
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    trace = out.with_suffix(".trace.json")
    if args.tp == 1:
        profile_steps(build_engine(args, args.kernels), args, trace)
    else:  # rank 0's view: its kernels, NCCL's included (a collective's time includes waiting for the others)
        ecfg = EngineConfig(device="cuda", dtype=args.dtype, kernels=args.kernels, tp=args.tp, max_num_seqs=1,
                            max_num_batched_tokens=256, max_model_len=1024, num_gpu_blocks=128)
        overrides = {"num_layers": args.layers} if args.layers else {}
        spec = LaunchSpec(source=ModelSource(preset=args.preset, overrides=overrides), engine=ecfg, is_spans=False)
        with start_ranks(spec) as (runner, broadcast):
            engine = LLMEngine(runner, load_tokenizer(runner.cfg), broadcast=broadcast,
                               emitter=SpanEmitter(0, is_enabled=False))
            profile_steps(engine, args, trace)
            del engine, runner
    kernels = kernels_from_trace(trace)
    log(f"{len(kernels)} GPU activities in {args.steps} steps")
    result = {"benchmark": "profile_decode_step", "device": torch.cuda.get_device_name(), "preset": args.preset,
              "tp": args.tp, "layers": args.layers or "all", "dtype": args.dtype, "kernels_impl": args.kernels,
              "prompt_len": args.prompt_len, **summarise(kernels, args.steps)}
    out.write_text(json.dumps(result, indent=2))
    with gzip.open(str(trace) + ".gz", "wt") as f:
        f.write(trace.read_text())
    trace.unlink()
    log(f"busy {result['busy_us_per_step']:.0f} us/step, idle {result['idle_us_per_step']:.0f} us/step; top: "
        + ", ".join(f"{k['name'][:40]} {k['us_per_step']:.0f}" for k in result["kernels"][:8]))


if __name__ == "__main__":
    main()
