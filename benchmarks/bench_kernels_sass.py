"""Compile every kernel for Hopper (sm_90) on this machine, no GPU needed, and report what the machine code does.

    python benchmarks/bench_kernels_sass.py [--arch 90] [--out benchmarks/results/bench_kernels_sass.json]

The public wrappers are called at Llama-3-8B shapes with their launches recorded instead of run, so the compiled
variants are exactly those the engine would launch. Each is compiled by Triton's own toolchain (ptxas ships in the
triton wheel), then the report lists registers, shared memory, local memory (spills), the widths of global loads
and stores in the SASS (LDG.E.128 = 16-byte vectors), and whether tensor-core (HMMA) and async-copy (LDGSTS)
instructions are present. Memory-bound kernels want 128-bit accesses and no local memory.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.compiler import compile as triton_compile
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction, create_function_from_signature

import gpusleuth.kernels as K
from gpusleuth.kernels import _runtime

MODULES = ("rmsnorm", "rope", "swiglu", "softmax", "attention_decode", "attention_prefill")
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


@contextmanager
def recorded_launches():
    """Within the block, kernel launches are appended to the yielded list instead of running."""
    records: list[tuple] = []
    original = _runtime.LazyKernel.__getitem__

    def getitem(self, grid):
        return lambda *args, **kwargs: records.append((self, grid, args, kwargs))

    modules = [sys.modules[f"gpusleuth.kernels.{m}"] for m in MODULES]
    saved = [m.is_triton_available for m in modules]
    _runtime.LazyKernel.__getitem__ = getitem
    for m in modules:
        m.is_triton_available = lambda device: True
    try:
        yield records
    finally:
        _runtime.LazyKernel.__getitem__ = original
        for m, f in zip(modules, saved):
            m.is_triton_available = f


@contextmanager
def compiled_mode():
    """Compiled (not interpreted) Triton for the block, even in a process started with TRITON_INTERPRET=1.

    triton.language's library functions (tl.sum, tl.max ...) were made interpreted when triton was imported
    under TRITON_INTERPRET=1; the compiler needs them as JITFunctions, so they are swapped for the block.
    """
    import triton.language as tl

    saved_env = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    swapped, twins = [], {}
    holders = [m for n, m in list(sys.modules.items()) if n.startswith("triton.language") and m is not None]
    for holder in holders + [tl.tensor]:
        for name, obj in list(vars(holder).items()):
            if isinstance(obj, InterpretedFunction):
                swapped.append((holder, name, obj))
                setattr(holder, name, twins.setdefault(id(obj), JITFunction(obj.fn)))
    try:
        yield
    finally:
        for holder, name, obj in swapped:
            setattr(holder, name, obj)
        if saved_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved_env


def compile_for(record: tuple, arch: int):
    """Compile one recorded launch for ``sm_<arch>`` the way JITFunction.run would on that GPU."""
    lazy, _, args, kwargs = record
    with compiled_mode():
        jit_fn = JITFunction(lazy.fn)
        target = GPUTarget("cuda", arch, 32)
        backend = make_backend(target)
        binder = create_function_from_signature(jit_fn.signature, jit_fn.params, backend)
        bound, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = jit_fn._pack_args(backend, kwargs, bound, specialization, options)
        src = ASTSource(jit_fn, signature, constexprs, attrs)
        return triton_compile(src, target=target, options=options.__dict__)


def machine_report(kernel) -> dict:
    """Registers, memory and instruction mix of a compiled kernel, read from its cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([BIN / "cuobjdump", "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([BIN / "nvdisasm", "-c", f.name], capture_output=True, text=True).stdout
    field = lambda name: int(m.group(1)) if (m := re.search(rf"\b{name}:(\d+)", usage)) else None  # noqa: E731
    ops = re.findall(r"\b((?:LDG|STG|LDL|STL|LDGSTS|HMMA|HGMMA)[\.\w]*)", sass)
    widths = lambda prefix: sorted({_width(o) for o in ops if o.split(".")[0] == prefix})  # noqa: E731
    return {"registers": field("REG"), "shared_bytes": field("SHARED"), "local_bytes": field("LOCAL"),
            "stack_bytes": field("STACK"), "ldg_bits": widths("LDG"), "stg_bits": widths("STG"),
            "has_local_memory_ops": any(o.startswith(("LDL", "STL")) for o in ops),
            "has_hmma": any(o.startswith(("HMMA", "HGMMA")) for o in ops),
            "has_ldgsts": any(o.startswith("LDGSTS") for o in ops), "sass_lines": sass.count("\n")}


def _width(op: str) -> int:
    for bits in (128, 64, 16, 8):
        if f".{bits}" in op or f".U{bits}" in op or f".S{bits}" in op:
            return bits
    return 32


def llama_launches() -> list[tuple[str, tuple]]:
    """(label, record) for every kernel variant the wrappers launch at Llama-3-8B shapes (bf16)."""
    bf = dict(dtype=torch.bfloat16)
    x, w = torch.empty(32, 4096, **bf), torch.empty(4096, **bf)
    q, k, pos = torch.empty(32, 32, 128, **bf), torch.empty(32, 8, 128, **bf), torch.zeros(32, dtype=torch.long)
    cache = torch.empty(8192, 128)
    kc = torch.empty(64, 16, 8, 128, **bf)
    table, lens = torch.zeros(2, 32, dtype=torch.int32), torch.full((2,), 500, dtype=torch.int32)
    cu = torch.tensor([0, 32, 64], dtype=torch.int32)
    calls = {
        "rms_norm": lambda: K.rms_norm(x, w, 1e-5),
        "add_rms_norm": lambda: K.add_rms_norm(x, x, w, 1e-5),
        "rms_norm_many_rows": lambda: K.rms_norm(torch.empty(2048, 4096, **bf), w, 1e-5),
        "add_rms_norm_many_rows": lambda: K.add_rms_norm(*(torch.empty(2048, 4096, **bf),) * 2, w, 1e-5),
        "swiglu": lambda: K.swiglu(torch.empty(32, 2 * 14336, **bf)),
        "rope": lambda: K.rope_(q, k, pos, cache),
        "causal_softmax": lambda: K.scaled_causal_softmax(torch.empty(1, 32, 4, 4096, **bf), 0.088),
        "causal_softmax_loop": lambda: K.scaled_causal_softmax(torch.empty(1, 2, 4, 20000, **bf), 0.088),
        "paged_decode_split": lambda: K.paged_decode_attention(q[:2], kc, kc, table, lens, 0.088),
        "paged_decode_single": lambda: K.paged_decode_attention(q[:2], kc, kc, table, lens, 0.088,
                                                                K.DecodeConfig(num_splits=1)),
        "paged_decode_fp32": lambda: K.paged_decode_attention(q[:2].float(), kc.float(), kc.float(), table, lens,
                                                              0.088),
        "prefill": lambda: K.prefill_attention(torch.empty(64, 32, 128, **bf), k.repeat(2, 1, 1),
                                               k.repeat(2, 1, 1), cu, 0.088),
        "paged_prefill": lambda: K.paged_prefill_attention(torch.empty(64, 32, 128, **bf), kc, kc, table, cu,
                                                           lens, 0.088),
    }
    out = []
    for label, call in calls.items():
        with compiled_mode(), recorded_launches() as records:  # launch arguments as on a GPU (no interpreter)
            call()
        for i, rec in enumerate(records):
            out.append((label if i == 0 else f"{label}/{rec[0].fn.__name__}", rec))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="compile the kernels for sm_90 and report their machine code")
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_kernels_sass.json"))
    args = p.parse_args(argv)
    rows = []
    for label, rec in llama_launches():
        kernel = compile_for(rec, args.arch)
        rep = {"kernel": label, "fn": rec[0].fn.__name__, "num_warps": kernel.metadata.num_warps,
               "num_stages": kernel.metadata.num_stages, "dynamic_shared_bytes": kernel.metadata.shared,
               **machine_report(kernel)}
        rows.append(rep)
        print(f"{label:<34} warps {rep['num_warps']}  regs {rep['registers']:>3}  "
              f"smem {rep['dynamic_shared_bytes']:>6}  local {rep['local_bytes']:>3}"
              f"  LDG {rep['ldg_bits']}  STG {rep['stg_bits']}  hmma {rep['has_hmma']}  ldgsts {rep['has_ldgsts']}",
              flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"arch": f"sm_{args.arch}", "triton": triton.__version__, "kernels": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
