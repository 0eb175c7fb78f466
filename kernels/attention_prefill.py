"""Causal prefill attention over packed variable-length sequences, from fresh K/V or from the paged KV cache.

``prefill_attention``: q[T, Hq, D], k/v[T, Hk, D] packed by ``cu_seqlens[B+1]``; each sequence attends causally to
itself. ``paged_prefill_attention`` (chunked prefill): the chunk's K/V are already in the cache; query i of
sequence b sits at position ``context_lens[b] - q_len_b + i`` and sees every cached position up to it.

Kernel: flash-attention forward. One program per (query tile, sequence, query head); K/V tiles are streamed only up
to the causal bound of the tile, with an online softmax in float32. Both entry points share one kernel, the paged
variant gathering K/V rows through the block table.
"""

import torch

from ._checks import check_contiguous, check_same_device, check_same_dtype, check_scale, check_tensor
from ._runtime import cdiv, dot_precision, is_triton_available, lazy_jit, next_pow2, tl, upcast_dot

LOG2E = 1.4426950408889634


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """q[L, Hq, D], k/v[S, Hk, D], mask[L, S] (True = visible) -> [L, Hq, D] via torch SDPA."""
    g = q.shape[1] // k.shape[1]
    qt = q.transpose(0, 1)
    kt = k.repeat_interleave(g, dim=1).transpose(0, 1)
    vt = v.repeat_interleave(g, dim=1).transpose(0, 1)
    out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale)
    return out.transpose(0, 1)


def prefill_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                          scale: float) -> torch.Tensor:
    """Torch reference: per-sequence causal SDPA (syncs to read ``cu_seqlens``)."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e > s:
            mask = torch.ones(e - s, e - s, dtype=torch.bool, device=q.device).tril()
            out[s:e] = _sdpa(q[s:e], k[s:e], v[s:e], mask, scale)
    return out


def paged_prefill_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                                block_tables: torch.Tensor, cu_seqlens_q: torch.Tensor, context_lens: torch.Tensor,
                                scale: float) -> torch.Tensor:
    """Torch reference for chunked prefill over the paged cache (syncs to read the lengths)."""
    out = torch.empty_like(q)
    block_size, Hk, D = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    bounds, ctxs = cu_seqlens_q.tolist(), context_lens.tolist()
    for b, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        if e == s:
            continue
        pos = torch.arange(ctxs[b], device=q.device)
        slots = block_tables[b].long()[pos // block_size] * block_size + pos % block_size
        k = k_cache.reshape(-1, Hk, D)[slots]
        v = v_cache.reshape(-1, Hk, D)[slots]
        q_pos = torch.arange(e - s, device=q.device)[:, None] + (ctxs[b] - (e - s))
        out[s:e] = _sdpa(q[s:e], k, v, pos[None, :] <= q_pos, scale)
    return out


@lazy_jit
def _prefill_kernel(q_ptr, k_ptr, v_ptr, o_ptr, cu_ptr, ctx_ptr, bt_ptr, scale_log2,
                    sq_t, sq_h, sk_a, sk_b, sv_a, sv_b, so_t, so_h, stride_bt, max_kv,
                    G: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr, PAGED: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr,
                    UPCAST: tl.constexpr):
    mb = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    q_start = tl.load(cu_ptr + b)
    q_len = tl.load(cu_ptr + b + 1) - q_start
    if mb * BLOCK_M >= q_len:
        return
    if PAGED:
        kv_len = tl.minimum(tl.load(ctx_ptr + b), max_kv)  # never read past the block table's row
    else:
        kv_len = q_len
    first_pos = kv_len - q_len  # position of query 0
    m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, BLOCK_D)
    qd_mask = (m[:, None] < q_len) & (d[None, :] < D)
    q_rows = (q_start + m).to(tl.int64)
    q = tl.load(q_ptr + q_rows[:, None] * sq_t + h * sq_h + d[None, :], mask=qd_mask, other=0.0)
    if UPCAST:  # the interpreter cannot multiply bf16 matrices: same products, exact in float32
        q = q.to(tl.float32)
    kvh = h // G
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = tl.minimum(kv_len, first_pos + (mb + 1) * BLOCK_M)  # causal bound of this query tile
    for n0 in range(0, hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < kv_len
        if PAGED:  # a = block stride, b = slot stride
            page = tl.load(bt_ptr + b * stride_bt + n // PAGE, mask=n_mask, other=0).to(tl.int64)
            k_row = page * sk_a + (n % PAGE) * sk_b + kvh * D
            v_row = page * sv_a + (n % PAGE) * sv_b + kvh * D
        else:  # a = token stride, b = head stride
            tok = (q_start + n).to(tl.int64)
            k_row = tok * sk_a + kvh * sk_b
            v_row = tok * sv_a + kvh * sv_b
        kv_mask = n_mask[:, None] & (d[None, :] < D)
        k = tl.load(k_ptr + k_row[:, None] + d[None, :], mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale_log2  # [M, N]
        visible = (n[None, :] <= (first_pos + m)[:, None]) & n_mask[None, :]
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows past q_len see nothing
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + v_row[:, None] + d[None, :], mask=kv_mask, other=0.0)
        p = p.to(v.dtype)  # rounded like the tensor-core path on the GPU
        if UPCAST:
            p = p.to(tl.float32)
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PREC)
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(o_ptr + q_rows[:, None] * so_t + h * so_h + d[None, :], out.to(o_ptr.dtype.element_ty), mask=qd_mask)


def _launch(q, k, v, out, cu, ctx, bt, kv_strides, max_q_len: int, page: int, paged: bool, scale: float) -> None:
    T, Hq, D = q.shape
    B = cu.shape[0] - 1
    if T == 0 or B == 0 or max_q_len == 0:
        return
    block_m, block_n = 64, 64
    grid = (cdiv(max_q_len, block_m), B, Hq)
    max_kv = bt.shape[1] * page if paged else 0  # paged: tokens a block-table row can address
    _prefill_kernel[grid](q, k, v, out, cu, ctx, bt, float(scale) * LOG2E, q.stride(0), q.stride(1), *kv_strides,
                          out.stride(0), out.stride(1), bt.stride(0), max_kv, G=Hq // k.shape[-2], D=D, PAGE=page,
                          PAGED=paged, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, next_pow2(D)),
                          PREC=dot_precision(q.dtype), UPCAST=upcast_dot(q.dtype), num_warps=4, num_stages=2)


def _check_q(q: torch.Tensor, Hk: int, D: int, cu: torch.Tensor, cu_name: str) -> None:
    check_tensor("q", q, ndim=3)
    check_tensor(cu_name, cu, ndim=1, dtypes=(torch.int32,))
    check_scale_and_heads(q, Hk, D)
    if cu.shape[0] < 1:
        raise ValueError(f"{cu_name} must have B+1 >= 1 entries")


def check_scale_and_heads(q: torch.Tensor, Hk: int, D: int) -> None:
    if q.shape[2] != D or q.shape[1] % Hk:
        raise ValueError(f"q [T, Hq, D] needs D={D} and Hq divisible by Hk={Hk}; got {tuple(q.shape)}")
    if D > 256:
        raise ValueError(f"head_dim {D} exceeds the kernel's limit of 256")


def _max_len(cu: torch.Tensor) -> int:
    return int((cu[1:] - cu[:-1]).max()) if cu.shape[0] > 1 else 0


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, scale: float,
                      max_seqlen: int | None = None) -> torch.Tensor:
    """Causal attention within each packed sequence: q[T, Hq, D], k/v[T, Hk, D] -> [T, Hq, D].

    ``max_seqlen`` (longest sequence) saves a device sync when the caller knows it.
    """
    check_tensor("k", k, ndim=3)
    check_tensor("v", v, ndim=3)
    _check_q(q, k.shape[1], k.shape[2], cu_seqlens, "cu_seqlens")
    check_scale(scale)
    if k.shape != v.shape or k.shape[0] != q.shape[0]:
        raise ValueError(f"k and v must be [T={q.shape[0]}, Hk, D]; got {tuple(k.shape)}, {tuple(v.shape)}")
    check_same_dtype(q=q, k=k, v=v)
    check_same_device(q=q, k=k, v=v, cu_seqlens=cu_seqlens)
    if not is_triton_available(q.device):
        return prefill_attention_ref(q, k, v, cu_seqlens, scale)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    max_len = _max_len(cu_seqlens) if max_seqlen is None else max_seqlen
    strides = (k.stride(0), k.stride(1), v.stride(0), v.stride(1))
    _launch(q, k, v, out, cu_seqlens, cu_seqlens, cu_seqlens, strides, max_len, 1, False, scale)
    return out


def paged_prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                            block_tables: torch.Tensor, cu_seqlens_q: torch.Tensor, context_lens: torch.Tensor,
                            scale: float, max_seqlen_q: int | None = None) -> torch.Tensor:
    """Chunked-prefill attention of packed queries q[T, Hq, D] over the paged KV cache -> [T, Hq, D]."""
    check_tensor("k_cache", k_cache, ndim=4)
    check_tensor("v_cache", v_cache, ndim=4)
    check_contiguous("k_cache", k_cache)
    check_contiguous("v_cache", v_cache)
    _check_q(q, k_cache.shape[2], k_cache.shape[3], cu_seqlens_q, "cu_seqlens_q")
    check_scale(scale)
    check_tensor("block_tables", block_tables, ndim=2, dtypes=(torch.int32,))
    check_tensor("context_lens", context_lens, ndim=1, dtypes=(torch.int32,))
    B = cu_seqlens_q.shape[0] - 1
    if block_tables.shape[0] != B or context_lens.shape[0] != B or k_cache.shape != v_cache.shape:
        raise ValueError(f"need block_tables [B={B}, max_blocks], context_lens [B], equal cache shapes; got "
                         f"{tuple(block_tables.shape)}, {tuple(context_lens.shape)}, {tuple(k_cache.shape)}, "
                         f"{tuple(v_cache.shape)}")
    check_same_dtype(q=q, k_cache=k_cache, v_cache=v_cache)
    check_same_device(q=q, k_cache=k_cache, block_tables=block_tables, cu_seqlens_q=cu_seqlens_q,
                      context_lens=context_lens)
    if not is_triton_available(q.device):
        return paged_prefill_attention_ref(q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    max_len = _max_len(cu_seqlens_q) if max_seqlen_q is None else max_seqlen_q
    strides = (k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1))
    _launch(q, k_cache, v_cache, out, cu_seqlens_q, context_lens, block_tables, strides, max_len,
            k_cache.shape[1], True, scale)
    return out
