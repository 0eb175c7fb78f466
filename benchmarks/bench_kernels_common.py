"""Timing, bandwidth and torch.compile helpers shared by the kernel benchmarks (benchmarks/bench_kernels*.py).

Timing on CUDA uses triton.testing: ``do_bench`` (CUDA events, L2 flushed before every run, median) for large
inputs and for decode attention, ``do_bench_cudagraph`` (a graph of many replays, so launch overhead does not
dominate; L2 stays warm, as activations would in a model) for small elementwise inputs. On the CPU (``--smoke``)
a perf_counter median: it only proves the script runs.
"""

import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

SMALL_BYTES = 64 << 20  # below this, time a CUDA graph of replays (launch overhead would dominate)


def log(msg: str) -> None:
    print(msg, flush=True)


@dataclass(slots=True)
class Timing:
    ms: float | None
    method: str
    error: str | None = None


def _short(e: BaseException) -> str:
    line = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {line[:300]}"


def time_fn(fn: Callable[[], object], device: torch.device, nbytes: int, l2_flush: bool = False) -> Timing:
    """Median milliseconds of ``fn()``; errors (OOM, compile failures) are returned, never raised.

    ``l2_flush`` forces flushed event timing even for small inputs (decode attention: in a real model the KV
    cache of a layer is not in L2 when its step comes).
    """
    try:
        if device.type != "cuda":
            fn()
            samples = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
            return Timing(statistics.median(samples), "cpu-perf-counter")
        import triton.testing as tt

        fn()  # warm up: compile, autotune, allocator
        torch.cuda.synchronize()
        if nbytes < SMALL_BYTES and not l2_flush:
            try:
                return Timing(tt.do_bench_cudagraph(fn, rep=50, return_mode="median"), "cudagraph-median")
            except Exception:  # capture can fail (a sync inside fn): fall back to event timing
                torch.cuda.synchronize()
        return Timing(tt.do_bench(fn, warmup=25, rep=100, return_mode="median"), "events-median-l2-flushed")
    except torch.cuda.OutOfMemoryError as e:
        torch.cuda.empty_cache()
        return Timing(None, "failed", _short(e))
    except Exception as e:  # noqa: BLE001 - a benchmark row reports its failure instead of ending the run
        if "--debug" in sys.argv:
            traceback.print_exc()
        return Timing(None, "failed", _short(e))


def copy_bandwidth_gbs(device: torch.device, nbytes: int) -> float:
    """Device-to-device copy bandwidth in GB/s, bytes read plus bytes written."""
    n = nbytes // 2
    src = torch.randn(n, device=device).to(torch.bfloat16) if device.type == "cuda" else torch.randn(n).bfloat16()
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device, nbytes)
    del src, dst
    return 2 * nbytes / (t.ms * 1e-3) / 1e9 if t.ms else float("nan")


@dataclass(slots=True)
class Compiler:
    """torch.compile with failures recorded instead of raised (the benchmark must finish)."""

    enabled: bool
    reason: str = ""
    failures: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        import torch._dynamo as dynamo

        # one compiled graph per benchmarked shape: allow more recompiles than the default 8
        for name in ("cache_size_limit", "recompile_limit"):
            if hasattr(dynamo.config, name):
                setattr(dynamo.config, name, 256)

    def compile(self, name: str, fn: Callable) -> Callable | None:
        if not self.enabled:
            return None
        try:
            return torch.compile(fn, dynamic=False)
        except Exception as e:  # noqa: BLE001
            self.failures[name] = _short(e)
            return None


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    o, r = out.double(), ref.double()
    return ((o - r).norm() / r.norm().clamp_min(1e-30)).item()


def safe_check(check: Callable[[], float]) -> float | None:
    """Run a correctness check; a failure (OOM) gives None instead of ending the run."""
    try:
        return check()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def gbs(nbytes: int, ms: float | None) -> float | None:
    return None if not ms else nbytes / (ms * 1e-3) / 1e9


def row(kernel: str, shape: str, nbytes: int, copy_gbs: float, timings: dict[str, Timing],
        check: float | None = None, **extra) -> dict:
    """One JSON result row: times, GB/s, fraction of copy bandwidth per implementation."""
    out = {"kernel": kernel, "shape": shape, "bytes": nbytes, "max_rel_err_vs_eager": check, **extra}
    for impl, t in timings.items():
        bw = gbs(nbytes, t.ms)
        out[impl] = {"ms": t.ms, "gbs": bw, "pct_of_copy": None if bw is None else bw / copy_gbs,
                     "method": t.method, "error": t.error}
    tri, comp, eager = (timings.get(k) for k in ("triton", "compile", "eager"))
    if tri and tri.ms:
        out["speedup_vs_compile"] = comp.ms / tri.ms if comp and comp.ms else None
        out["speedup_vs_eager"] = eager.ms / tri.ms if eager and eager.ms else None
    return out


def fmt_row(r: dict) -> str:
    parts = [f"{r['kernel']:<14} {r['shape']:<34}"]
    for impl in ("triton", "eager", "compile", "sdpa"):
        if impl in r:
            v = r[impl]
            parts.append(f"{impl} {v['gbs']:7.0f} GB/s ({100 * v['pct_of_copy']:4.0f}%)" if v["gbs"]
                         else f"{impl} {'n/a':>21}")
    return "  ".join(parts)
