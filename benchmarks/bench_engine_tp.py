"""Tensor-parallel scaling of batch-1 decode with llama3-70b shapes (bf16, random weights made on the GPUs).

llama3-70b does not fit one GPU in bf16 (~141 GB of weights), so TP=1 vs TP=4 is measured on a layer subset
(--layers, default 40 of the 80 layers, same embedding and LM head) with both sizes running exactly the same
model; that ratio is the reported speedup. TP=4 is also run with all 80 layers for the absolute figure, and the
full-model TP=1 time is extrapolated from the subset by weight bytes (decode at batch 1 reads every weight once
per token), which is labelled as an estimate. Target: >= 3.4x at TP=4. `--tp 4,8` measures several sizes in the
same run (one TP=1 subset baseline shared by all).

    python benchmarks/bench_engine_tp.py --out benchmarks/results/bench_engine_tp.json
    python benchmarks/bench_engine_tp.py --tp 4,8 --out benchmarks/results/bench_engine_tp_8xh200.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
from pathlib import Path

import torch

from bench_engine_decode import engine_decode, log
from gpusleuth.engine.config import EngineConfig, ModelSource, preset
from gpusleuth.engine.engine import LLMEngine
from gpusleuth.engine.spans import SpanEmitter
from gpusleuth.engine.tokenizer import load_tokenizer
from gpusleuth.engine.workers import LaunchSpec, start_ranks


def measure(args, tp: int, layers: int) -> dict:
    log(f"TP={tp}, {layers} layers: building ...")
    ecfg = EngineConfig(device=args.device, dtype=args.dtype, tp=tp, max_num_seqs=1, max_num_batched_tokens=256,
                        max_model_len=1024, num_gpu_blocks=128, num_cpu_blocks=128,
                        is_cuda_graphs=not args.no_cuda_graphs, num_cpu_threads=1 if args.smoke else 0)
    spec = LaunchSpec(source=ModelSource(preset=args.preset, overrides={"num_layers": layers}), engine=ecfg,
                      is_spans=False)
    with start_ranks(spec) as (runner, broadcast):
        engine = LLMEngine(runner, load_tokenizer(runner.cfg), broadcast=broadcast,
                           emitter=SpanEmitter(0, is_enabled=False))
        engine_decode(engine, args.prompt_len, 8)  # warm-up
        runs = [engine_decode(engine, args.prompt_len, args.num_tokens) for _ in range(args.repeats)]
        params = runner.cfg.num_params()
        del engine, runner
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    tok_s = statistics.median(r["decode_tok_s"] for r in runs)
    log(f"  TP={tp}, {layers} layers: {tok_s:.1f} tok/s ({1e3 / tok_s:.2f} ms/token)")
    return {"tp": tp, "layers": layers, "params": params, "decode_tok_s": tok_s, "ms_per_token": 1e3 / tok_s,
            "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama3-70b")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--tp", default="4", help="comma-separated TP sizes to compare with TP=1, e.g. 4,8")
    p.add_argument("--layers", type=int, default=40, help="layer subset that fits one GPU for the TP=1 run")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--num-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-full", action="store_true", help="skip the all-layers TP run")
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny preset, TP=2 over gloo on the CPU")
    p.add_argument("--out", default="benchmarks/results/bench_engine_tp.json")
    args = p.parse_args()
    args.device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    sizes = [int(t) for t in str(args.tp).split(",") if t.strip()]
    if args.smoke:
        args.preset, args.dtype, sizes, args.layers = "tiny", "float32", [2], 2
        args.num_tokens, args.repeats = 8, 1
    elif torch.cuda.device_count() < max(sizes):
        raise SystemExit(f"--tp {max(sizes)} needs {max(sizes)} GPUs; {torch.cuda.device_count()} visible")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    full_layers = preset(args.preset).num_layers
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    result = {"benchmark": "engine_tp_scaling", "device": device, "gpus_visible": torch.cuda.device_count(),
              "tp_sizes": sizes, "preset": args.preset, "dtype": args.dtype, "subset": [], "speedup_subset": {},
              "full": [], "full_estimate": {}, "target_speedup_tp4": 3.4,
              "note": f"TP=1 cannot hold {args.preset} in {args.dtype}; speedups are measured on {args.layers} "
                      f"of {full_layers} layers with identical shapes on both sides"}

    def save() -> None:  # after every measurement: a run cut short still leaves its figures
        out.write_text(json.dumps(result, indent=2))

    base = measure(args, 1, args.layers)
    result["subset"].append(base)
    save()
    for tp in sizes:
        result["subset"].append(measure(args, tp, args.layers))
        speedup = base["ms_per_token"] / result["subset"][-1]["ms_per_token"]
        result["speedup_subset"][str(tp)] = speedup
        save()
        log(f"speedup TP={tp} vs TP=1 on {args.layers} layers: {speedup:.2f}x (target 3.4x at TP=4)")
    for tp in sizes if not (args.no_full or args.layers == full_layers) else []:
        full = measure(args, tp, full_layers)
        tp1_ms_est = base["ms_per_token"] * preset(args.preset).num_params() / base["params"]
        result["full"].append(full)
        result["full_estimate"][str(tp)] = {
            "tp1_ms_per_token_estimated": tp1_ms_est, "speedup_estimated": tp1_ms_est / full["ms_per_token"],
            "how": "TP=1 subset time scaled by parameter bytes (batch-1 decode is weight-bandwidth bound)"}
        save()
        log(f"full model TP={tp}: {full['decode_tok_s']:.1f} tok/s; estimated full-model speedup "
            f"{tp1_ms_est / full['ms_per_token']:.2f}x")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
