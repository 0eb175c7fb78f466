"""Fused scale + causal mask + softmax over attention scores ``[B, H, Sq, Sk]``.

Query row i sits at key position ``Sk - Sq + i`` and sees keys ``0..Sk - Sq + i``. Statistics in float32; the
output has the input dtype. Rows up to ``MAX_SINGLE_BLOCK`` keys are loaded once; longer rows use an online
max/sum pass and a second pass that writes.
"""

import torch

from ._checks import check_scale, check_tensor
from ._runtime import is_triton_available, lazy_jit, next_pow2, tl

MAX_SINGLE_BLOCK = 8192
LOOP_BLOCK = 2048
LOG2E = 1.4426950408889634


def scaled_causal_softmax_ref(scores: torch.Tensor, scale: float) -> torch.Tensor:
    """Torch reference: ``softmax(scores * scale + causal_mask)`` in float32, cast to the input dtype."""
    sq, sk = scores.shape[-2], scores.shape[-1]
    q_pos = torch.arange(sq, device=scores.device)[:, None] + (sk - sq)
    masked = torch.arange(sk, device=scores.device)[None, :] > q_pos
    s = scores.float() * scale if scores.dtype != torch.float64 else scores * scale
    return torch.softmax(s.masked_fill(masked, float("-inf")), dim=-1).to(scores.dtype)


@lazy_jit
def _softmax_kernel(x_ptr, y_ptr, Sq, Sk, scale_log2, BLOCK: tl.constexpr, SINGLE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    limit = Sk - Sq + row % Sq  # last visible key of this query
    x_row = x_ptr + row * Sk
    y_row = y_ptr + row * Sk
    dt = y_ptr.dtype.element_ty
    if SINGLE:
        cols = tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < Sk, other=0.0).to(tl.float32) * scale_log2
        x = tl.where(cols <= limit, x, float("-inf"))
        e = tl.exp2(x - tl.max(x, axis=0))
        tl.store(y_row + cols, (e / tl.sum(e, axis=0)).to(dt), mask=cols < Sk)
    else:
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        acc = tl.zeros([BLOCK], tl.float32)
        for start in range(0, limit + 1, BLOCK):  # keys past the limit are masked: never read them
            cols = start + tl.arange(0, BLOCK)
            # load up to Sk (a mask the compiler can vectorise), then mask the future keys
            x = tl.load(x_row + cols, mask=cols < Sk, other=0.0).to(tl.float32) * scale_log2
            x = tl.where(cols <= limit, x, float("-inf"))
            m_new = tl.maximum(m, x)
            # lanes still at -inf keep acc 0 (guard the -inf - -inf = nan)
            alpha = tl.where(m_new == float("-inf"), 0.0, tl.exp2(m - m_new))
            acc = acc * alpha + tl.where(m_new == float("-inf"), 0.0, tl.exp2(x - m_new))
            m = m_new
        row_max = tl.max(m, axis=0)
        total = tl.sum(acc * tl.exp2(m - row_max), axis=0)
        for start in range(0, Sk, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            if start <= limit:
                x = tl.load(x_row + cols, mask=cols < Sk, other=0.0).to(tl.float32) * scale_log2
                p = tl.where(cols <= limit, tl.exp2(x - row_max) / total, 0.0)
            else:  # wholly in the future: zeros without reading
                p = tl.zeros([BLOCK], tl.float32)
            tl.store(y_row + cols, p.to(dt), mask=cols < Sk)


def scaled_causal_softmax(scores: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal softmax of ``scores[B, H, Sq, Sk] * scale`` along the last dimension; needs ``Sk >= Sq``."""
    check_tensor("scores", scores, ndim=4)
    check_scale(scale)
    sq, sk = scores.shape[-2], scores.shape[-1]
    if sk < sq:
        raise ValueError(f"scores needs Sk >= Sq (queries are the last Sq of Sk positions), got Sq={sq}, Sk={sk}")
    if not is_triton_available(scores.device):
        return scaled_causal_softmax_ref(scores, scale)
    x = scores.contiguous()
    out = torch.empty_like(x)
    rows = x.numel() // sk if sk else 0
    if rows == 0:
        return out
    single = sk <= MAX_SINGLE_BLOCK
    block = next_pow2(sk) if single else LOOP_BLOCK
    warps = max(1, min(16, block * 4 // 2048))  # fp32 working set: ~16 values per thread
    _softmax_kernel[(rows,)](x, out, sq, sk, float(scale) * LOG2E, BLOCK=block, SINGLE=single, num_warps=warps)
    return out
