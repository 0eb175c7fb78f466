"""Benchmark gpusleuth's Triton kernels against measured copy bandwidth, torch eager and torch.compile.

    python benchmarks/bench_kernels.py [--out benchmarks/results/bench_kernels.json] [--smoke] [--no-compile]
                                       [--no-sweep] [--only rms_norm,add_rms_norm,swiglu,rope,softmax,decode]

On CUDA: each memory-bound kernel at Llama-3-8B shapes (decode batch 32, a 4096-token prefill) and at a large size,
GB/s counted as the minimum bytes (each input read once, each output written once) over the median time, and as a
fraction of the device-to-device copy bandwidth measured in the same run (read + write counted); paged decode
attention at 4k-32k context (bench_kernels_decode.py); a small sweep of launch parameters. Targets (H100):
RMSNorm, add+RMSNorm, SwiGLU, RoPE >= 90 % of copy at large sizes and faster than torch.compile; decode attention
>= 80 % of copy at 4k-32k. ``--smoke`` runs tiny sizes in the Triton CPU interpreter to prove the script works.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_kernels.json"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU via TRITON_INTERPRET=1")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--no-sweep", action="store_true", help="skip the launch-parameter sweeps")
    p.add_argument("--only", default="", help="comma-separated subset of kernels")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop sweeps/compiles past this many seconds")
    p.add_argument("--debug", action="store_true", help="print tracebacks of failed rows")
    return p.parse_args(argv)


ARGS = parse_args()
if ARGS.smoke:  # before triton is imported: its library @jit functions pick the mode at import
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

import gpusleuth.kernels as K  # noqa: E402
from bench_common import write_result  # noqa: E402
from bench_kernels_common import (Compiler, copy_bandwidth_gbs, fmt_row, log, rel_err, row, safe_check,  # noqa: E402
                                  time_fn)

# the modules themselves (gpusleuth.kernels.swiglu the attribute is the function of that name)
rms_mod, rope_mod, swiglu_mod = (sys.modules[f"gpusleuth.kernels.{m}"] for m in ("rmsnorm", "rope", "swiglu"))

DT = torch.bfloat16
H, HQ, HK, D, INTER = 4096, 32, 8, 128, 14336  # Llama-3-8B


class Ctx:
    """Run-wide state: device, copy bandwidth, compiler, deadline."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
        self.start = time.monotonic()
        self.compiler = Compiler(enabled=not args.no_compile and self.device.type == "cuda")
        self.copy_gbs = 0.0

    def over_budget(self) -> bool:
        return time.monotonic() - self.start > self.args.budget_s

    def rand(self, *shape, scale=1.0):
        return (torch.randn(*shape, device=self.device) * scale).to(DT)


def _measure(ctx: Ctx, kernel: str, shape: str, nbytes: int, triton_fn, eager_fn, compile_src, check, **extra):
    """Time triton / eager / compiled versions of one case and append a row."""
    timings = {"triton": time_fn(triton_fn, ctx.device, nbytes), "eager": time_fn(eager_fn, ctx.device, nbytes)}
    compiled = None if ctx.over_budget() else ctx.compiler.compile(f"{kernel} {shape}", compile_src)
    if compiled is not None:
        timings["compile"] = time_fn(compiled, ctx.device, nbytes)
    r = row(kernel, shape, nbytes, ctx.copy_gbs, timings, safe_check(check), **extra)
    if "compile" not in timings:
        r["compile"] = {"ms": None, "gbs": None, "pct_of_copy": None, "method": "skipped",
                        "error": ctx.compiler.failures.get(f"{kernel} {shape}") or _compile_skip_reason(ctx)}
    log(fmt_row(r))
    return r


def _compile_skip_reason(ctx: Ctx) -> str:
    if ctx.device.type != "cuda":
        return "not run on the CPU (smoke mode)"
    return "disabled (--no-compile)" if ctx.args.no_compile else "skipped: time budget spent"


def _sizes(ctx: Ctx, llama: list[int], large: int) -> list[tuple[int, str]]:
    if ctx.args.smoke:
        return [(3, "smoke")]
    return [(t, "llama3-8b") for t in llama] + [(large, "large")]


def bench_rms(ctx: Ctx, fused: bool) -> list[dict]:
    rows, e = [], 2
    name = "add_rms_norm" if fused else "rms_norm"
    hidden = 64 if ctx.args.smoke else H
    for T, tag in _sizes(ctx, [32, 4096], 32768):
        x, r, w = ctx.rand(T, hidden), ctx.rand(T, hidden), ctx.rand(hidden)
        if fused:
            nbytes = 4 * T * hidden * e
            tri, ref = (lambda: K.add_rms_norm(x, r, w, 1e-5)), (lambda: K.add_rms_norm_ref(x, r, w, 1e-5))
            check = lambda: rel_err(tri()[0], ref()[0])  # noqa: E731
        else:
            nbytes = 2 * T * hidden * e
            tri, ref = (lambda: K.rms_norm(x, w, 1e-5)), (lambda: K.rms_norm_ref(x, w, 1e-5))
            check = lambda: rel_err(tri(), ref())  # noqa: E731
        rows.append(_measure(ctx, name, f"[{T},{hidden}] bf16 ({tag})", nbytes, tri, ref, ref, check))
        if tag in ("large", "smoke") and not ctx.args.no_sweep and not ctx.over_budget():
            for per_program, warps in ((1, 4), (1, 8), (1, 16), (2, 4), (2, 8), (2, 16), (4, 8), (4, 16)):
                res = r if fused else None
                t = time_fn(lambda: rms_mod._launch(x, w, 1e-5, res, per_program, warps), ctx.device, nbytes)
                rows.append(row(name + "/sweep", f"[{T},{hidden}] rows={per_program} warps={warps}", nbytes,
                                ctx.copy_gbs, {"triton": t}))
                log(fmt_row(rows[-1]))
    return rows


def bench_swiglu(ctx: Ctx) -> list[dict]:
    rows = []
    inter = 40 if ctx.args.smoke else INTER
    for T, tag in _sizes(ctx, [32, 4096], 8192):
        x = ctx.rand(T, 2 * inter, scale=3.0)
        nbytes = 3 * T * inter * 2
        tri, ref = (lambda: K.swiglu(x)), (lambda: K.swiglu_ref(x))
        rows.append(_measure(ctx, "swiglu", f"[{T},{2 * inter}] bf16 ({tag})", nbytes, tri, ref, ref,
                             lambda: rel_err(tri(), ref())))
        if tag in ("large", "smoke") and not ctx.args.no_sweep and not ctx.over_budget():
            for block, warps in ((1024, 4), (2048, 4), (2048, 8), (4096, 8), (8192, 16)):
                t = time_fn(lambda: swiglu_mod._launch(x, block, warps), ctx.device, nbytes)
                rows.append(row("swiglu/sweep", f"[{T},{2 * inter}] block={block} warps={warps}", nbytes,
                                ctx.copy_gbs, {"triton": t}))
                log(fmt_row(rows[-1]))
    return rows


def bench_rope(ctx: Ctx) -> list[dict]:
    rows = []
    hq, hk, d = (4, 2, 16) if ctx.args.smoke else (HQ, HK, D)
    cache = K.build_rope_cache(131072, d, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                               ctx.device, torch.float32)
    for T, tag in _sizes(ctx, [32, 4096], 32768):
        qkv = ctx.rand(T, (hq + 2 * hk) * d)
        q, k = qkv[:, : hq * d].view(T, hq, d), qkv[:, hq * d:(hq + hk) * d].view(T, hk, d)
        pos = torch.randint(0, 131072, (T,), device=ctx.device)
        # q and k read and written once, positions and one cos/sin row per token read
        nbytes = 2 * T * (hq + hk) * d * 2 + T * 8 + T * d * 4

        def check():
            q1, k1, q2, k2 = q.clone(), k.clone(), q.clone(), k.clone()
            K.rope_(q1, k1, pos, cache)
            K.rope_ref_(q2, k2, pos, cache)
            return max(rel_err(q1, q2), rel_err(k1, k2))

        tri, ref = (lambda: K.rope_(q, k, pos, cache)), (lambda: K.rope_ref_(q, k, pos, cache))
        rows.append(_measure(ctx, "rope", f"T={T} q{hq}/k{hk}x{d} bf16 ({tag})", nbytes, tri, ref, ref, check))
        if tag in ("large", "smoke") and not ctx.args.no_sweep and not ctx.over_budget():
            for tile, warps in ((2048, 4), (4096, 4), (4096, 8), (8192, 8)):
                t = time_fn(lambda: rope_mod._launch(q, k, pos, cache, tile, warps), ctx.device, nbytes)
                rows.append(row("rope/sweep", f"T={T} tile={tile} warps={warps}", nbytes, ctx.copy_gbs,
                                {"triton": t}))
                log(fmt_row(rows[-1]))
    return rows


def bench_softmax(ctx: Ctx) -> list[dict]:
    rows = []
    cases = [(1, 2, 3, 7)] if ctx.args.smoke else [(32, 32, 1, 4096), (1, 32, 2048, 2048), (1, 32, 512, 16384)]
    for shape in cases:
        s = ctx.rand(*shape, scale=4.0)
        nbytes = 2 * s.numel() * 2
        tri = lambda: K.scaled_causal_softmax(s, 0.088)  # noqa: E731
        ref = lambda: K.scaled_causal_softmax_ref(s, 0.088)  # noqa: E731
        rows.append(_measure(ctx, "causal_softmax", f"{list(shape)} bf16", nbytes, tri, ref, ref,
                             lambda: rel_err(tri(), ref())))
    return rows


def environment(ctx: Ctx) -> dict:
    import triton

    dev = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else f"cpu ({platform.processor()})"
    return {"device": dev, "device_type": ctx.device.type, "torch": torch.__version__, "triton": triton.__version__,
            "python": sys.version.split()[0], "smoke": ctx.args.smoke,
            "sm_count": torch.cuda.get_device_properties(ctx.device).multi_processor_count
            if ctx.device.type == "cuda" else None}


def main() -> int:
    args = ARGS
    if not torch.cuda.is_available() and not args.smoke:
        print("bench_kernels: no CUDA device; run on a GPU host, or use --smoke for a CPU check", file=sys.stderr)
        return 2
    ctx = Ctx(args)
    env = environment(ctx)
    log(f"device: {env['device']}  torch {env['torch']}  triton {env['triton']}")
    copy_bytes = 1 << 16 if args.smoke else 1 << 30
    ctx.copy_gbs = max(copy_bandwidth_gbs(ctx.device, copy_bytes) for _ in range(2))
    log(f"device-to-device copy: {ctx.copy_gbs:.0f} GB/s (read + write, {copy_bytes >> 10} KiB buffers)")
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    benches = {"rms_norm": lambda: bench_rms(ctx, False), "add_rms_norm": lambda: bench_rms(ctx, True),
               "swiglu": lambda: bench_swiglu(ctx), "rope": lambda: bench_rope(ctx),
               "softmax": lambda: bench_softmax(ctx)}
    from bench_kernels_decode import bench_decode  # noqa: E402

    benches["decode"] = lambda: bench_decode(ctx)
    rows: list[dict] = []
    for name, fn in benches.items():
        if not only or name in only:
            log(f"== {name}")
            rows.extend(fn())
    from bench_kernels_decode import summarize  # noqa: E402

    result = {**env, "copy_gbs": ctx.copy_gbs, "elapsed_s": time.monotonic() - ctx.start,
              "compile_failures": ctx.compiler.failures,
              "targets": summarize(rows, judged=ctx.device.type == "cuda"), "results": rows}
    out = write_result(args.out, result, indent=1)
    log("== targets")
    for t in result["targets"]:
        log(f"{'PASS' if t['met'] else 'MISS' if t['met'] is False else 'n/a '}  {t['target']}: {t['measured']}")
    log(f"wrote {out} in {result['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
