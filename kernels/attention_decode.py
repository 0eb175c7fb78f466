"""Paged decode attention (one new query token per sequence) over the engine's KV blocks, with GQA and split-KV.

Layout (``paged_decode_attention`` checks the shapes and dtypes): ``k_cache``/``v_cache``
``[num_blocks, block_size, Hk, D]``; ``block_tables[B, max_blocks]`` int32; ``context_lens[B]`` counts the valid
tokens including the current one. Token p of sequence b lives in slot
``block_tables[b, p // block_size] * block_size + p % block_size``.

Kernel: one program per (sequence, KV head, split). It loads the G = Hq / Hk query heads that share the KV head once
and streams its range of cached tokens in tiles, keeping an online softmax, so every K/V byte is read once. When a
batch has too few (sequence, head) pairs to fill the GPU, the context is cut into splits whose partial results (and
log-sum-exp) a second small kernel combines ("flash decoding"). The split count is chosen on the host from
``block_tables.shape[1]`` (an upper bound of the context), so no device sync is needed and CUDA graphs can capture it.
"""

from dataclasses import dataclass

import torch

from ._checks import check_contiguous, check_same_device, check_same_dtype, check_scale, check_tensor
from ._runtime import cdiv, dot_precision, is_triton_available, lazy_jit, next_pow2, sm_count, tl, upcast_dot

LOG2E = 1.4426950408889634


def paged_decode_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                               block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float) -> torch.Tensor:
    """Torch reference (float32 math, float64 if given float64). Memory grows with ``block_tables.shape[1]``."""
    B, Hq, D = q.shape
    block_size, Hk = k_cache.shape[1], k_cache.shape[2]
    pos = torch.arange(block_tables.shape[1] * block_size, device=q.device)
    slots = block_tables.long()[:, pos // block_size] * block_size + pos % block_size  # [B, L]
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32
    k = k_cache.reshape(-1, Hk, D)[slots].to(ct)  # [B, L, Hk, D]
    v = v_cache.reshape(-1, Hk, D)[slots].to(ct)
    qg = q.to(ct).view(B, Hk, Hq // Hk, D)
    s = torch.einsum("bhgd,blhd->bhgl", qg, k) * scale
    valid = pos[None, :] < context_lens.long()[:, None]  # [B, L]
    p = torch.softmax(s.masked_fill(~valid[:, None, None, :], float("-inf")), dim=-1)
    return torch.einsum("bhgl,blhd->bhgd", p, v).reshape(B, Hq, D).to(q.dtype)


@dataclass(slots=True)
class DecodeConfig:
    """Launch parameters; ``None`` fields are chosen by heuristics (benchmarks sweep them)."""

    block_n: int = 64  # tokens per tile
    num_warps: int = 4
    num_stages: int = 2
    num_splits: int | None = None  # None: enough programs for ~4 per SM
    min_tokens_per_split: int = 128  # below this the combine step costs more than the parallelism gains

    def __post_init__(self) -> None:
        if self.block_n < 16 or self.block_n & (self.block_n - 1):
            raise ValueError(f"block_n must be a power of two >= 16, got {self.block_n}")
        if self.num_splits is not None and self.num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {self.num_splits}")


@lazy_jit
def _decode_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, o_ptr, lse_ptr, scale_log2,
                   stride_qb, stride_qh, stride_bt, stride_blk, stride_slot, stride_ob, stride_oh, stride_os,
                   tokens_per_split, max_ctx, G: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr,
                   BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                   SPLIT: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    kvh = tl.program_id(1)
    sp = tl.program_id(2)
    ctx = tl.minimum(tl.load(ctx_ptr + b), max_ctx)  # never read past the block table's row
    start = sp * tokens_per_split
    end = tl.minimum(start + tokens_per_split, ctx)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    gd_mask = (g[:, None] < G) & (d[None, :] < D)
    heads = kvh * G + g  # query heads sharing this KV head
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=gd_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    head_off = kvh * D
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < end
        page = tl.load(bt_ptr + b * stride_bt + n // PAGE, mask=n_mask, other=0).to(tl.int64)
        row = page * stride_blk + (n % PAGE) * stride_slot + head_off  # [N] element offsets of the token rows
        kv_mask = n_mask[:, None] & (d[None, :] < D)
        k = tl.load(k_ptr + row[:, None] + d[None, :], mask=kv_mask, other=0.0)  # [N, D]
        if UPCAST:  # the interpreter cannot multiply bf16 matrices: same products, exact in float32
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale_log2  # [G, N], log2 domain
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + row[:, None] + d[None, :], mask=kv_mask, other=0.0)
        p = p.to(v.dtype)  # rounded like the tensor-core path on the GPU
        if UPCAST:
            p = p.to(tl.float32)
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PREC)
        m_i = m_new
    # an empty split (start >= ctx) has l_i == 0: write zeros and lse = -inf so the reduce ignores it
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    o_off = b * stride_ob + heads[:, None] * stride_oh + sp * stride_os + d[None, :]
    tl.store(o_ptr + o_off, out.to(o_ptr.dtype.element_ty), mask=gd_mask)
    if SPLIT:
        lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
        tl.store(lse_ptr + (b * tl.num_programs(1) * G + heads) * tl.num_programs(2) + sp, lse, mask=g < G)


@lazy_jit
def _combine_kernel(part_ptr, lse_ptr, o_ptr, S, stride_ob, stride_oh, D: tl.constexpr,
                    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    row = b * tl.num_programs(1) + h  # index of (b, h) in the partial buffers
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    lse = tl.load(lse_ptr + row * S + s, mask=s < S, other=float("-inf"))
    top = tl.max(lse, axis=0)
    top = tl.where(top == float("-inf"), 0.0, top)  # every split empty: weights 0, output 0
    w = tl.exp2(lse - top)
    total = tl.sum(w, axis=0)
    mask = (s[:, None] < S) & (d[None, :] < D)
    part = tl.load(part_ptr + (row * S + s[:, None]) * D + d[None, :], mask=mask, other=0.0)
    out = tl.sum(part * w[:, None], axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(o_ptr + b * stride_ob + h * stride_oh + d, out.to(o_ptr.dtype.element_ty), mask=d < D)


def _check(q, k_cache, v_cache, block_tables, context_lens, scale) -> None:
    check_tensor("q", q, ndim=3)
    check_tensor("k_cache", k_cache, ndim=4)
    check_tensor("v_cache", v_cache, ndim=4)
    check_contiguous("k_cache", k_cache)
    check_contiguous("v_cache", v_cache)
    check_tensor("block_tables", block_tables, ndim=2, dtypes=(torch.int32,))
    check_tensor("context_lens", context_lens, ndim=1, dtypes=(torch.int32,))
    check_same_dtype(q=q, k_cache=k_cache, v_cache=v_cache)
    check_same_device(q=q, k_cache=k_cache, v_cache=v_cache, block_tables=block_tables, context_lens=context_lens)
    check_scale(scale)
    B, Hq, D = q.shape
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache and v_cache must have one shape, got {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    Hk = k_cache.shape[2]
    if k_cache.shape[3] != D or Hq % Hk:
        raise ValueError(f"q [B, Hq, D] must match k_cache [N, block, Hk, D] with Hq % Hk == 0; "
                         f"got q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}")
    if block_tables.shape[0] != B or context_lens.shape[0] != B:
        raise ValueError(f"block_tables [B, max_blocks] and context_lens [B] need B={B}; got "
                         f"{tuple(block_tables.shape)}, {tuple(context_lens.shape)}")
    if D > 256:
        raise ValueError(f"head_dim {D} exceeds the kernel's limit of 256")


def _num_splits(cfg: DecodeConfig, B: int, Hk: int, max_ctx: int, device: torch.device) -> int:
    if cfg.num_splits is not None:
        return cfg.num_splits
    want = cdiv(4 * sm_count(device), B * Hk)  # ~4 programs per SM
    return max(1, min(want, max_ctx // cfg.min_tokens_per_split))


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float,
                           config: DecodeConfig | None = None) -> torch.Tensor:
    """Attention of ``q[B, Hq, D]`` (one token per sequence) over its paged KV cache; returns ``[B, Hq, D]``.

    ``context_lens`` must be >= 1 (a sequence with 0 tokens gets zeros) and fit its block-table row (longer values
    are clamped to ``block_tables.shape[1] * block_size``, not checked: that would need a sync). ``config``
    overrides launch parameters.
    """
    _check(q, k_cache, v_cache, block_tables, context_lens, scale)
    if not is_triton_available(q.device):
        return paged_decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens, scale)
    cfg = config or DecodeConfig()
    B, Hq, D = q.shape
    page, Hk = k_cache.shape[1], k_cache.shape[2]
    out = torch.empty_like(q)
    if B == 0:
        return out
    max_ctx = block_tables.shape[1] * page
    splits = _num_splits(cfg, B, Hk, max_ctx, q.device)
    tokens = max(1, cdiv(cdiv(max_ctx, splits), cfg.block_n)) * cfg.block_n  # whole tiles per split
    splits = max(1, cdiv(max_ctx, tokens))
    block_d = max(16, next_pow2(D))
    common = dict(G=Hq // Hk, D=D, PAGE=page, BLOCK_G=max(16, next_pow2(Hq // Hk)), BLOCK_D=block_d,
                  BLOCK_N=cfg.block_n, PREC=dot_precision(q.dtype), UPCAST=upcast_dot(q.dtype),
                  num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    scale_log2 = float(scale) * LOG2E
    kv_strides = (k_cache.stride(0), k_cache.stride(1))
    if splits == 1:
        _decode_kernel[(B, Hk, 1)](q, k_cache, v_cache, block_tables, context_lens, out, out, scale_log2,
                                   q.stride(0), q.stride(1), block_tables.stride(0), *kv_strides,
                                   out.stride(0), out.stride(1), 0, tokens, max_ctx, SPLIT=False, **common)
        return out
    part = torch.empty((B, Hq, splits, D), dtype=torch.float32, device=q.device)
    lse = torch.empty((B, Hq, splits), dtype=torch.float32, device=q.device)
    _decode_kernel[(B, Hk, splits)](q, k_cache, v_cache, block_tables, context_lens, part, lse, scale_log2,
                                    q.stride(0), q.stride(1), block_tables.stride(0), *kv_strides,
                                    part.stride(0), part.stride(1), part.stride(2), tokens, max_ctx,
                                    SPLIT=True, **common)
    _combine_kernel[(B, Hq)](part, lse, out, splits, out.stride(0), out.stride(1), D=D,
                             BLOCK_S=next_pow2(splits), BLOCK_D=block_d, num_warps=4)
    return out
