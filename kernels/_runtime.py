"""Triton presence, interpreter detection and lazily built kernels.

Triton decides between compiling a kernel and interpreting it on the CPU (``TRITON_INTERPRET=1``) when
``@triton.jit`` runs. Decorating at import time would freeze that choice at whatever the environment was when
``gpusleuth.kernels`` was first imported (by the engine, a test, a benchmark). ``LazyKernel`` instead builds the
kernel at its first launch in each mode, so the mode is whatever is in force at launch time.
"""

import os
import types
from typing import Any, Callable

import torch

try:  # triton is an optional extra (x86_64 only); without it every wrapper runs its torch reference
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = types.SimpleNamespace(constexpr=int)  # enough for kernel signatures to be defined
    HAS_TRITON = False


def interpret_enabled() -> bool:
    """True when Triton kernels launched now run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    if not HAS_TRITON:
        return False
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:  # triton >= 3.4 reads the variable live through its knobs
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def is_triton_available(device: torch.device | str) -> bool:
    """Whether the fused Triton kernels can run on tensors living on ``device``.

    CUDA devices need triton and a visible GPU; CPU tensors need the interpreter (``TRITON_INTERPRET=1``).
    """
    device = torch.device(device)
    if not HAS_TRITON:
        return False
    if interpret_enabled():
        return device.type in ("cpu", "cuda")
    return device.type == "cuda" and torch.cuda.is_available()


class LazyKernel:
    """A ``@triton.jit`` kernel built at first launch, separately for compiled and interpreted mode."""

    __slots__ = ("fn", "jit_kwargs", "_built")

    def __init__(self, fn: Callable, **jit_kwargs: Any) -> None:
        self.fn = fn
        self.jit_kwargs = jit_kwargs
        self._built: dict[bool, Any] = {}

    def __getitem__(self, grid: Any) -> Callable:
        mode = interpret_enabled()
        kernel = self._built.get(mode)
        if kernel is None:
            # triton.jit looks at TRITON_INTERPRET right now, so the result matches `mode`
            kernel = self._built[mode] = triton.jit(self.fn, **self.jit_kwargs)
        return kernel[grid]


def lazy_jit(fn: Callable) -> LazyKernel:
    """Decorator: like ``@triton.jit`` but deferred to the first launch (see module docstring)."""
    return LazyKernel(fn)


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: true float32 for float32 inputs (Triton defaults to tf32 there)."""
    return "ieee" if dtype == torch.float32 else "tf32"  # ignored for 16-bit inputs


def upcast_dot(dtype: torch.dtype) -> bool:
    """Whether bf16 ``tl.dot`` operands must be widened: the interpreter multiplies their raw bits otherwise."""
    return dtype == torch.bfloat16 and interpret_enabled()


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (and >= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


_SM_COUNT: dict[int, int] = {}


def sm_count(device: torch.device) -> int:
    """Number of streaming multiprocessors of a CUDA device (a plausible 132 elsewhere, for the interpreter)."""
    if device.type != "cuda":
        return 132
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]
