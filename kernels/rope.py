"""Rotary position embedding (rotate-half / NeoX convention) applied in place to q and k, and its cos/sin cache.

``cos_sin_cache[max_pos, D]`` holds cos in ``[:, :D//2]`` and sin in ``[:, D//2:]``. Rounding follows Hugging Face
Llama: ``x * cos + rotate_half(x) * sin`` with cos/sin in the activation dtype, each product and the sum rounded to
that dtype. One program handles one token: it loads that position's cos/sin once and rotates every q and k head.
"""

import math

import torch

from ._checks import check_contiguous, check_same_device, check_tensor
from ._runtime import is_triton_available, lazy_jit, next_pow2, tl

ROPE_TYPES = ("default", "llama3")


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3 frequency scaling: long wavelengths divided by `factor`, short kept, a smooth ramp between."""
    try:
        factor = float(scaling["factor"])
        low = float(scaling["low_freq_factor"])
        high = float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
    except KeyError as e:
        raise ValueError(f"rope scaling of type llama3 needs key {e.args[0]!r}") from None
    wavelen = 2 * math.pi / inv_freq
    # ramp from 0 (long wavelength: fully scaled) to 1 (short wavelength: unscaled)
    ramp = ((old_len / wavelen - low) / (high - low)).clamp(0.0, 1.0)
    return (1 - ramp) * inv_freq / factor + ramp * inv_freq


def build_rope_cache(max_pos: int, head_dim: int, theta: float, scaling: dict | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[max_pos, head_dim]`` cache: cos of the rotary angles in the first half, sin in the second.

    ``scaling`` is a Hugging Face ``rope_scaling`` dict; ``None`` or rope type "default" means unscaled, "llama3"
    applies Llama 3 frequency scaling (keys factor, low_freq_factor, high_freq_factor,
    original_max_position_embeddings). Angles are computed in float32, then cast to ``dtype``.
    """
    if max_pos < 1 or head_dim < 2 or head_dim % 2:
        raise ValueError(f"build_rope_cache needs max_pos >= 1 and an even head_dim, got {max_pos}, {head_dim}")
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"rope scaling type {rope_type!r} is not supported; use one of {ROPE_TYPES}")
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope_type == "llama3":
        inv_freq = _llama3_inv_freq(inv_freq, scaling)
    angles = torch.outer(torch.arange(max_pos, dtype=torch.float32), inv_freq)  # [max_pos, D/2]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(device=device, dtype=dtype)


def rope_ref_(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor) -> None:
    """Torch reference, in place: ``x = x * cos + rotate_half(x) * sin`` for q[T, Hq, D] and k[T, Hk, D]."""
    half = q.shape[-1] // 2
    cs = cos_sin_cache[positions]  # [T, D]
    for x in (q, k):
        cos = cs[:, None, :half].to(x.dtype).repeat(1, 1, 2)
        sin = cs[:, None, half:].to(x.dtype).repeat(1, 1, 2)
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        x.copy_(x * cos + rotated * sin)


@lazy_jit
def _rope_kernel(q_ptr, k_ptr, pos_ptr, cache_ptr, Hq, Hk, sq_t, sq_h, sk_t, sk_h, s_cache,
                 HALF: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t)
    d = tl.arange(0, BLOCK_HALF)
    dmask = d < HALF
    dt = q_ptr.dtype.element_ty
    # cos/sin rounded to the activation dtype, as in the reference
    cos = tl.load(cache_ptr + pos * s_cache + d, mask=dmask, other=0.0).to(dt).to(tl.float32)
    sin = tl.load(cache_ptr + pos * s_cache + HALF + d, mask=dmask, other=0.0).to(dt).to(tl.float32)
    for h0 in range(0, Hq, BLOCK_HQ):
        h = h0 + tl.arange(0, BLOCK_HQ)
        ptr = q_ptr + t * sq_t + h[:, None] * sq_h + d[None, :]
        mask = (h[:, None] < Hq) & dmask[None, :]
        x1 = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(ptr + HALF, mask=mask, other=0.0).to(tl.float32)
        o1 = (x1 * cos).to(dt).to(tl.float32) - (x2 * sin).to(dt).to(tl.float32)
        o2 = (x2 * cos).to(dt).to(tl.float32) + (x1 * sin).to(dt).to(tl.float32)
        tl.store(ptr, o1.to(dt), mask=mask)
        tl.store(ptr + HALF, o2.to(dt), mask=mask)
    for h0 in range(0, Hk, BLOCK_HK):
        h = h0 + tl.arange(0, BLOCK_HK)
        ptr = k_ptr + t * sk_t + h[:, None] * sk_h + d[None, :]
        mask = (h[:, None] < Hk) & dmask[None, :]
        x1 = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(ptr + HALF, mask=mask, other=0.0).to(tl.float32)
        o1 = (x1 * cos).to(dt).to(tl.float32) - (x2 * sin).to(dt).to(tl.float32)
        o2 = (x2 * cos).to(dt).to(tl.float32) + (x1 * sin).to(dt).to(tl.float32)
        tl.store(ptr, o1.to(dt), mask=mask)
        tl.store(ptr + HALF, o2.to(dt), mask=mask)


def _check(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cache: torch.Tensor) -> None:
    check_tensor("q", q, ndim=3)
    check_tensor("k", k, ndim=3)
    check_tensor("positions", positions, ndim=1, dtypes=(torch.int64, torch.int32))
    check_tensor("cos_sin_cache", cache, ndim=2)
    check_contiguous("cos_sin_cache", cache)
    T, _, D = q.shape
    if k.shape[0] != T or k.shape[2] != D:
        raise ValueError(f"k must be [T={T}, Hk, D={D}], got {tuple(k.shape)}")
    if positions.shape[0] != T:
        raise ValueError(f"positions must have T={T} entries, got {positions.shape[0]}")
    if D % 2 or cache.shape[1] != D:
        raise ValueError(f"head_dim must be even and match cos_sin_cache[:, D]; got q D={D}, "
                         f"cache {tuple(cache.shape)}")
    if q.dtype != k.dtype:
        raise ValueError(f"q and k must share one dtype, got {q.dtype} and {k.dtype}")
    check_same_device(q=q, k=k, positions=positions, cos_sin_cache=cache)


def rope_(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor) -> None:
    """Rotate q[T, Hq, D] and k[T, Hk, D] in place at ``positions[T]`` (views with strided tokens/heads are fine).

    Positions must lie in ``[0, cos_sin_cache.shape[0])``; the kernel does not check them (that would need a sync).
    """
    _check(q, k, positions, cos_sin_cache)
    if not is_triton_available(q.device):
        rope_ref_(q, k, positions, cos_sin_cache)
        return
    _launch(q, k, positions, cos_sin_cache)


def _launch(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
            tile: int = 4096, num_warps: int | None = None) -> None:
    """Launch without checks; ``tile`` (elements per head-tile half) and ``num_warps`` are swept by benchmarks."""
    T, Hq, D = q.shape
    Hk = k.shape[1]
    if T == 0:
        return
    half = D // 2
    block_half = next_pow2(half)
    block_h = max(1, tile // block_half)
    block_hq, block_hk = min(next_pow2(Hq), block_h), min(next_pow2(Hk), block_h)
    if num_warps is None:  # enough elements per thread in the smaller (k) tile for 16-byte accesses
        num_warps = max(1, min(4, block_hk * block_half * q.element_size() // 512))
    _rope_kernel[(T,)](
        q, k, positions, cos_sin_cache, Hq, Hk, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        cos_sin_cache.stride(0), HALF=half, BLOCK_HALF=block_half,
        BLOCK_HQ=block_hq, BLOCK_HK=block_hk, num_warps=num_warps)
