"""SwiGLU activation over the fused gate/up projection output: ``silu(gate_up[:, :I]) * gate_up[:, I:]``.

Rounding follows Hugging Face Llama's MLP: silu rounded to the activation dtype, then the product rounded.
A 2-D grid (row, column block) reads each input element once and writes each output once.
"""

import torch

from ._checks import check_tensor
from ._runtime import cdiv, is_triton_available, lazy_jit, next_pow2, tl


def swiglu_ref(gate_up: torch.Tensor) -> torch.Tensor:
    """Torch reference: ``silu(gate) * up`` with ``gate, up = gate_up.chunk(2, -1)``."""
    inter = gate_up.shape[-1] // 2
    return torch.nn.functional.silu(gate_up[..., :inter]) * gate_up[..., inter:]


@lazy_jit
def _swiglu_kernel(x_ptr, y_ptr, inter, stride_x, stride_y, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    dt = y_ptr.dtype.element_ty
    g = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    u = tl.load(x_ptr + row * stride_x + inter + cols, mask=mask, other=0.0, eviction_policy="evict_first")
    u = u.to(tl.float32)
    act = (g * tl.sigmoid(g)).to(dt).to(tl.float32)
    tl.store(y_ptr + row * stride_y + cols, (act * u).to(dt), mask=mask)


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """``gate_up[T, 2*I] -> [T, I]``: silu of the first half times the second half (rows may be strided)."""
    check_tensor("gate_up", gate_up, ndim=2)
    if gate_up.shape[1] % 2:
        raise ValueError(f"gate_up last dimension must be even (2 * intermediate size), got {gate_up.shape[1]}")
    if not is_triton_available(gate_up.device):
        return swiglu_ref(gate_up)
    return _launch(gate_up)


def _launch(gate_up: torch.Tensor, block: int | None = None, num_warps: int | None = None) -> torch.Tensor:
    """Launch without checks; ``block``/``num_warps`` override the heuristic (benchmarks sweep them)."""
    T, inter = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty((T, inter), dtype=gate_up.dtype, device=gate_up.device)
    if T == 0 or inter == 0:
        return out
    block = block or min(next_pow2(inter), 2048)
    # ~2 x 16-byte vectors per thread and input
    warps = num_warps or max(1, min(8, block * gate_up.element_size() // 1024))
    grid = (T, cdiv(inter, block))
    _swiglu_kernel[grid](gate_up, out, inter, gate_up.stride(0), out.stride(0), BLOCK=block, num_warps=warps)
    return out

