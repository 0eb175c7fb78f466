"""Shared fixtures and comparison helpers for the kernel tests (tests/test_kernels_*.py, tests/gpu/test_kernels_*).

Interpreter mode, whatever was imported first: Triton decides compiled vs interpreted when ``@triton.jit`` runs.
gpusleuth.kernels builds its kernels at launch time in the mode then in force (kernels/_runtime.py, LazyKernel), but
triton.language's own library functions (``tl.sum``, ``tl.max``, ``tl.sigmoid`` ...) are ``@jit`` functions decorated
when triton is imported, and in a full test run some other test (e.g. one importing transformers' Llama model) may
import triton before any kernel test runs. The ``triton_interpret`` fixture therefore sets TRITON_INTERPRET=1 and
swaps those library functions for interpreted twins for the duration of the test (monkeypatch), so the setting
neither depends on import order nor leaks into other helpers' tests.

Poisoning: ``poisoned_outputs`` makes every ``torch.empty``/``torch.empty_like`` inside the kernel modules return
NaN-filled (or -1-filled) memory, so an element a kernel forgets to write fails the comparison.
"""

import importlib
import math
import types

import pytest
import torch

KERNEL_MODULES = ("rmsnorm", "rope", "swiglu", "softmax", "attention_decode", "attention_prefill")

# Unit roundoff-ish spacing (machine epsilon) of each dtype.
EPS = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}

# Elementwise kernels vs their reference in the same dtype. float32: equal up to a few ulps (reductions are
# summed in another order). 16-bit: within 3 eps of the value because the interpreter *truncates* on each
# down-cast (the GPU rounds to nearest even) and the kernels round up to twice, the reference once.
ELEMENTWISE_ULPS = {torch.float32: 64, torch.bfloat16: 3, torch.float16: 3}

# Attention vs a float64 reference on the same (upcast) inputs, as ||out - ref|| / ||ref||. float32 math lands
# near 1e-7; bf16 operands (and P rounded to bf16 before the P@V product, as on tensor cores) near 3e-3.
ATTN_REL_TOL = {torch.float32: 1e-5, torch.bfloat16: 1.5e-2, torch.float16: 5e-3}


def _poison(t: torch.Tensor) -> torch.Tensor:
    return t.fill_(float("nan") if t.is_floating_point() else -1)


def _poisoning_torch() -> types.SimpleNamespace:
    """A stand-in for the ``torch`` module name inside the kernel modules with poisoned allocators."""

    class PoisonTorch(types.SimpleNamespace):
        def __getattr__(self, name):
            return getattr(torch, name)

    def empty(*args, **kwargs):
        return _poison(torch.empty(*args, **kwargs))

    def empty_like(*args, **kwargs):
        return _poison(torch.empty_like(*args, **kwargs))

    return PoisonTorch(empty=empty, empty_like=empty_like)


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Kernel outputs start as NaN: unwritten elements make comparisons fail."""
    fake = _poisoning_torch()
    for name in KERNEL_MODULES:
        module = importlib.import_module(f"gpusleuth.kernels.{name}")
        monkeypatch.setattr(module, "torch", fake)


@pytest.fixture
def triton_interpret(monkeypatch, poisoned_outputs):
    """Run this test's Triton launches in the CPU interpreter; also forbid silent fallback to the references."""
    pytest.importorskip("triton", reason="triton is not installed (needs the gpusleuth[engine] extra, x86_64)")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    snapshot = _snapshot_triton_language()
    _interpret_triton_library(monkeypatch)
    from gpusleuth.kernels import interpret_enabled, is_triton_available

    if not (interpret_enabled() and is_triton_available("cpu")):
        pytest.skip("this triton build does not honour TRITON_INTERPRET=1 set at run time")
    forbid_references(monkeypatch)
    yield
    _restore_triton_language(snapshot)


def _triton_language_holders() -> list:
    import sys

    import triton.language as tl

    mods = [m for n, m in list(sys.modules.items()) if n.startswith("triton.language") and m is not None]
    return mods + [tl.core.tensor, tl.core.tensor_descriptor_base]


def _snapshot_triton_language() -> dict:
    return {id(h): (h, dict(vars(h))) for h in _triton_language_holders()}


def _restore_triton_language(snapshot: dict) -> None:
    """Undo what interpreter runs patched into triton.language and did not restore.

    The interpreter swaps tl builtins for numpy versions around each launch, but a nested device-function call
    (tl.sum calling tl.reduce ...) patches without restoring, leaving the language half-interpreted for anything
    compiled later in the same process.
    """
    for holder, saved in snapshot.values():
        current = dict(vars(holder))
        # names the interpreter added (its helpers, injected into module globals once) stay: cached rewritten
        # functions refer to them
        for name, value in saved.items():
            if current.get(name) is not value:
                setattr(holder, name, value)


def _interpret_triton_library(monkeypatch) -> None:
    """Replace triton.language's compiled-mode ``@jit`` helpers by interpreted ones (see module docstring)."""
    import sys

    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    import triton.language as tl

    twins: dict[int, InterpretedFunction] = {}
    holders = [m for n, m in list(sys.modules.items()) if n.startswith("triton.language") and m is not None]
    for holder in holders + [tl.tensor]:
        for name, obj in list(vars(holder).items()):
            if isinstance(obj, JITFunction):
                twin = twins.setdefault(id(obj), InterpretedFunction(obj.fn))
                monkeypatch.setattr(holder, name, twin)


def forbid_references(monkeypatch) -> None:
    """Make every wrapper's torch fallback raise, so a passing test proves the Triton kernel ran."""
    for name in KERNEL_MODULES:
        module = importlib.import_module(f"gpusleuth.kernels.{name}")
        for attr in dir(module):
            if attr.endswith("_ref") or attr.endswith("_ref_"):
                monkeypatch.setattr(module, attr, _raiser(attr))


def _raiser(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"wrapper fell back to {name}: the Triton kernel did not run")

    return fail


def reference(name: str):
    """The real torch reference (tests call it directly; the module attribute may be patched)."""
    import gpusleuth.kernels as kernels

    return getattr(kernels, name)


def assert_elementwise_close(out: torch.Tensor, ref: torch.Tensor, scale: float = 0.0, ulps: int | None = None) -> None:
    """|out - ref| <= ulps * eps(dtype) * (|ref| + scale), elementwise; NaN never passes.

    ``scale`` covers cancellation: pass the magnitude of the terms that were summed (e.g. max|x| for RoPE).
    """
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert out.dtype == ref.dtype, f"dtype {out.dtype} != reference {ref.dtype}"
    assert not torch.isnan(out).any(), "output has NaN (unwritten element or bad math)"
    ulps = ELEMENTWISE_ULPS[out.dtype] if ulps is None else ulps
    o, r = out.double(), ref.double()
    bound = ulps * EPS[out.dtype] * (r.abs() + scale) + 1e-30
    excess = (o - r).abs() - bound
    if (excess > 0).any():
        i = int(excess.argmax())
        raise AssertionError(f"{int((excess > 0).sum())} of {o.numel()} elements off; worst at flat index {i}: "
                             f"{o.flatten()[i].item()} vs {r.flatten()[i].item()} (bound {bound.flatten()[i].item()})")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (inf if out has NaN)."""
    o, r = out.double(), ref.double()
    if torch.isnan(o).any():
        return math.inf
    return ((o - r).norm() / r.norm().clamp_min(1e-30)).item()


def make_paged_kv(context_lens: list[int], num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype,
                  device: str = "cpu", extra_blocks: int = 3, generator: torch.Generator | None = None):
    """Random KV cache with each sequence's blocks scattered at random ids; unused table slots hold 0.

    Returns (k_cache, v_cache, block_tables[B, max_blocks] int32, context_lens[B] int32).
    """
    need = [max(1, -(-n // block_size)) for n in context_lens]
    num_blocks = sum(need) + extra_blocks
    ids = torch.randperm(num_blocks, generator=generator).tolist()
    table = torch.zeros(len(context_lens), max(need), dtype=torch.int32)
    for b, n in enumerate(need):
        table[b, :n] = torch.tensor([ids.pop() for _ in range(n)], dtype=torch.int32)
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k = torch.randn(shape, generator=generator).to(dtype)
    v = torch.randn(shape, generator=generator).to(dtype)
    lens = torch.tensor(context_lens, dtype=torch.int32)
    return k.to(device), v.to(device), table.to(device), lens.to(device)
