"""Batch-1 decode throughput of the bundled engine (default llama3-8b, bf16, random weights made on the GPU).

Rows, all in one run on one GPU:
- gemv_ceiling: a CUDA graph of one GEMV per weight matrix of the same model (x[1, in] @ W^T), i.e. the weight
  bytes a decode step must read and nothing else: the ceiling (GPU_HOSTS.md measured 178 tok/s on H100).
- model_step: the engine's decode step alone (CUDA-graph replay incl. LM head, no scheduling or sampling), at
  batch 1 and at each --step-batches size (issue 6: batch 32, fused vs torch, target >= 1.2x).
- engine: the whole engine (schedule, broadcast, model, sampling, detokenize, spans, metrics) generating
  --num-tokens tokens for one request; decode tok/s = (tokens - 1) / (last token time - first token time).
  One engine row per --kernels choice (fused Triton kernels and the torch references).
Target: engine >= 160 tok/s on H100. `--smoke` runs the tiny preset on the CPU (proves the script runs).

    python benchmarks/bench_engine_decode.py --out benchmarks/results/bench_engine_decode.json
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
import torch.nn.functional as F

from bench_common import log, write_result
from gpusleuth.engine.batch import build_step_input
from gpusleuth.engine.config import EngineConfig, preset
from gpusleuth.engine.engine import LLMEngine
from gpusleuth.engine.runner import ModelRunner
from gpusleuth.engine.scheduler import StepPlan
from gpusleuth.engine.sequence import SamplingParams, Sequence
from gpusleuth.engine.spans import SpanEmitter
from gpusleuth.engine.tokenizer import load_tokenizer

CEILING_H100 = 178.0
TARGET = 160.0


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def blocks_per_seq(prompt_len: int, block_size: int = 16) -> int:
    return -(-(prompt_len + 1) // block_size)


def build_engine(args, kernels: str) -> LLMEngine:
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    ecfg = EngineConfig(device=args.device, dtype=args.dtype, kernels=kernels, max_num_seqs=max(args.step_batches),
                        max_num_batched_tokens=max(args.prompt_len, 256), max_model_len=2048,
                        num_gpu_blocks=max(256, 2 * max(args.step_batches) * blocks_per_seq(args.prompt_len)),
                        num_cpu_blocks=256, is_cuda_graphs=not args.no_cuda_graphs)
    runner = ModelRunner(preset(args.preset), ecfg, device)
    runner.init_kv_cache(runner.suggest_num_blocks())
    return LLMEngine(runner, load_tokenizer(runner.cfg), emitter=SpanEmitter(0, is_enabled=False))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemv_ceiling_ms(runner: ModelRunner, iters: int) -> float:
    """ms per pass of one GEMV over every weight matrix of the model (CUDA-graphed on GPU)."""
    weights = [m.weight for name, m in runner.model.named_modules() if name.endswith(("proj", "lm_head"))]
    xs = [torch.randn(1, w.shape[1], device=w.device, dtype=w.dtype) for w in weights]

    def chain() -> None:
        for x, w in zip(xs, weights):
            F.linear(x, w)

    return _time(chain, runner.device, iters)


def _time(fn, device: torch.device, iters: int) -> float:
    """Median ms of fn (as a CUDA graph on GPU)."""
    fn()
    sync(device)
    if device.type == "cuda":
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        fn = graph.replay
    return _time_eager(fn, device, iters)


def model_step_ms(engine: LLMEngine, prompt_len: int, iters: int, batch: int = 1) -> float:
    """ms of runner.execute for one decode step of `batch` sequences at context prompt_len (graph replay on GPU)."""
    seqs = []
    for i in range(batch):
        seq = Sequence(f"bench-{i}", [1] * (prompt_len + 1), SamplingParams(max_tokens=1))
        seq.num_computed = prompt_len
        seq.block_table = engine.allocator.allocate(-(-(prompt_len + 1) // engine.allocator.block_size))
        seqs.append(seq)
    inp = build_step_input(StepPlan(decode=seqs), engine.allocator.block_size)
    try:
        return _time_eager(lambda: engine.runner.execute(inp), engine.runner.device, iters)
    finally:
        for seq in seqs:
            engine.allocator.free(seq.block_table)


def _time_eager(fn, device: torch.device, iters: int) -> float:
    """Median ms of fn over 5 rounds of `iters` calls, after one warm-up call."""
    fn()
    sync(device)
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync(device)
        samples.append((time.perf_counter() - t0) * 1e3 / iters)
    return statistics.median(samples)


def engine_decode(engine: LLMEngine, prompt_len: int, num_tokens: int) -> dict:
    """Decode tok/s and TTFT of one greedy request through the whole engine."""
    params = SamplingParams(max_tokens=num_tokens, temperature=0.0, is_ignore_eos=True)
    start = time.perf_counter()
    engine.add_request(f"bench-{start}", [1 + i % 1000 for i in range(prompt_len)], params)
    stamps = []
    while engine.has_work:
        if engine.step():
            stamps.append(time.perf_counter())
    decode_s = stamps[-1] - stamps[0]
    return {"ttft_ms": (stamps[0] - start) * 1e3, "decode_tok_s": (len(stamps) - 1) / decode_s,
            "tokens": len(stamps)}


def run_kernels(args, kernels: str) -> list[dict]:
    log(f"building {args.preset} ({args.dtype}, kernels={kernels}) ...")
    engine = build_engine(args, kernels)
    runner = engine.runner
    rows = []
    if kernels == args.kernels[0]:
        ms = gemv_ceiling_ms(runner, args.iters)
        rows.append({"name": "gemv_ceiling", "ms_per_token": ms, "tok_s": 1e3 / ms})
        log(f"  gemv ceiling: {ms:.3f} ms = {1e3 / ms:.1f} tok/s")
    ms = model_step_ms(engine, args.prompt_len, args.iters)
    rows.append({"name": "model_step", "kernels": runner.ops.name, "ms_per_token": ms, "tok_s": 1e3 / ms,
                 "cuda_graphs": runner.graphs is not None})
    log(f"  model step ({runner.ops.name}): {ms:.3f} ms = {1e3 / ms:.1f} tok/s")
    per_seq = -(-(args.prompt_len + 1) // engine.allocator.block_size)
    for batch in args.step_batches:
        if batch > 1 and not engine.allocator.can_allocate(batch * per_seq):
            log(f"  model step batch {batch}: skipped, the KV cache holds {engine.allocator.num_free} blocks")
        elif batch > 1:
            ms = model_step_ms(engine, args.prompt_len, args.iters, batch)
            rows.append({"name": "model_step", "kernels": runner.ops.name, "batch": batch, "ms_per_step": ms,
                         "tok_s": batch * 1e3 / ms, "cuda_graphs": runner.graphs is not None})
            log(f"  model step batch {batch} ({runner.ops.name}): {ms:.3f} ms/step = {batch * 1e3 / ms:.0f} tok/s")
    engine_decode(engine, args.prompt_len, 8)  # warm-up
    runs = [engine_decode(engine, args.prompt_len, args.num_tokens) for _ in range(args.repeats)]
    best = max(runs, key=lambda r: r["decode_tok_s"])
    rows.append({"name": "engine", "kernels": runner.ops.name, "runs": runs,
                 "decode_tok_s_median": statistics.median(r["decode_tok_s"] for r in runs),
                 "decode_tok_s_best": best["decode_tok_s"]})
    log(f"  engine ({runner.ops.name}): median {rows[-1]['decode_tok_s_median']:.1f} tok/s over {args.repeats} "
        f"runs of {args.num_tokens} tokens (TTFT {runs[0]['ttft_ms']:.1f} ms)")
    del engine, runner
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def step_speedups(rows: list[dict]) -> dict[str, float]:
    """torch ms / fused ms of the model_step rows, per batch size (issue 6 target at batch 32: >= 1.2)."""
    ms = {(r["kernels"], r.get("batch", 1)): r.get("ms_per_step", r.get("ms_per_token"))
          for r in rows if r["name"] == "model_step"}
    out = {f"batch_{b}": ms[("torch", b)] / ms[(k, b)] for (k, b) in ms if k != "torch" and ("torch", b) in ms}
    for key, ratio in out.items():
        log(f"  decode step fused vs torch, {key}: {ratio:.2f}x")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama3-8b")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--kernels", default="fused,torch", help="comma-separated kernels choices, each one engine row")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--num-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--step-batches", default="32", help="extra decode-step batch sizes for the model_step rows")
    p.add_argument("--smoke", action="store_true", help="tiny preset on the CPU, few tokens")
    p.add_argument("--out", default="benchmarks/results/bench_engine_decode.json")
    args = p.parse_args()
    args.device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if args.smoke:
        args.preset, args.dtype, args.kernels = "tiny", "float32", "torch"
        args.num_tokens, args.repeats, args.iters, args.prompt_len = 16, 1, 3, 16
    args.kernels = args.kernels.split(",")
    args.step_batches = [1] + [int(b) for b in args.step_batches.split(",") if b and int(b) > 1]
    if args.device == "cpu":
        args.kernels = [k for k in args.kernels if k != "fused"] or ["torch"]
    rows = []
    for kernels in args.kernels:
        rows += run_kernels(args, kernels)
    dev = device_name(torch.device(args.device))
    result = {"benchmark": "engine_decode_batch1", "device": dev, "preset": args.preset, "dtype": args.dtype,
              "prompt_len": args.prompt_len, "num_tokens": args.num_tokens, "rows": rows,
              "step_speedup_fused_vs_torch": step_speedups(rows),
              "reference": {"gemv_ceiling_h100_tok_s": CEILING_H100, "target_tok_s": TARGET}}
    out = write_result(args.out, result)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
