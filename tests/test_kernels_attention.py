"""Paged decode attention, varlen prefill attention and paged (chunked) prefill attention Triton kernels vs their
torch references, in the Triton CPU interpreter (TRITON_INTERPRET=1 via the ``triton_interpret`` fixture).

Tolerance: ||out - ref|| / ||ref|| against the reference run in float64 on the same inputs (kernels_helpers.
ATTN_REL_TOL): float32 1e-5 (measured ~1e-7), bf16 1.5e-2 (measured ~3e-3: bf16 operands, P rounded to bf16
before P@V as on tensor cores). KV blocks are scattered at random ids; outputs start as NaN (poisoned).
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels_helpers import ATTN_REL_TOL, make_paged_kv, reference, rel_err

pytestmark = pytest.mark.usefixtures("triton_interpret")
from kernels_helpers import poisoned_outputs, triton_interpret  # noqa: E402,F401  (fixtures)

DTYPES = [torch.float32, torch.bfloat16]
SETTINGS = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _f64(*tensors):
    return [t.double() if t.is_floating_point() else t for t in tensors]


def _decode_case(ctx, Hk, ratio, D, block_size, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    k, v, table, lens = make_paged_kv(ctx, Hk, D, block_size, dtype, generator=g)
    q = torch.randn(len(ctx), Hk * ratio, D, generator=g).to(dtype)
    return q, k, v, table, lens


def _check_decode(q, k, v, table, lens, scale, config=None):
    from gpusleuth.kernels import paged_decode_attention

    out = paged_decode_attention(q, k, v, table, lens, scale, config)
    ref = reference("paged_decode_attention_ref")(*_f64(q, k, v), table, lens, scale)
    err = rel_err(out, ref)
    assert err <= ATTN_REL_TOL[q.dtype], f"relative error {err:.2e} > {ATTN_REL_TOL[q.dtype]:.0e}"
    return out


# ---- paged decode -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ratio", [1, 4, 8])
def test_decode_gqa_ratios(ratio, dtype):
    q, k, v, table, lens = _decode_case([1, 16, 17, 70], 2, ratio, 64, 16, dtype, seed=ratio)
    _check_decode(q, k, v, table, lens, 0.125)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("splits", [2, 5])
def test_decode_split_kv_matches_unsplit(splits, dtype):
    """Split-KV (with splits past the end of short sequences) equals the single-pass result."""
    from gpusleuth.kernels import DecodeConfig

    q, k, v, table, lens = _decode_case([3, 90, 41], 1, 4, 32, 8, dtype, seed=splits)
    one = _check_decode(q, k, v, table, lens, 0.2, DecodeConfig(num_splits=1, block_n=16))
    many = _check_decode(q, k, v, table, lens, 0.2, DecodeConfig(num_splits=splits, block_n=16))
    assert rel_err(many, one) <= ATTN_REL_TOL[dtype]


def test_decode_heuristic_splits_long_context():
    """The default config splits a long context of a tiny batch (few programs) and stays correct."""
    import gpusleuth.kernels.attention_decode as ad

    cfg = ad.DecodeConfig(min_tokens_per_split=32, block_n=16)
    assert ad._num_splits(cfg, 1, 1, 200, torch.device("cpu")) > 1
    q, k, v, table, lens = _decode_case([200], 1, 8, 16, 16, torch.float32, seed=3)
    _check_decode(q, k, v, table, lens, 0.3, cfg)


@pytest.mark.parametrize("D", [16, 40, 80])
def test_decode_head_dims_not_power_of_two(D):
    q, k, v, table, lens = _decode_case([5, 33], 2, 4, D, 16, torch.bfloat16, seed=D)
    _check_decode(q, k, v, table, lens, D ** -0.5)


@SETTINGS
@given(ctx=st.lists(st.integers(1, 80), min_size=1, max_size=3), hk=st.integers(1, 2),
       ratio=st.sampled_from([1, 4, 8]), D=st.sampled_from([16, 24, 32, 64]), block_size=st.sampled_from([4, 8, 16]),
       splits=st.integers(1, 4), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_decode_property(ctx, hk, ratio, D, block_size, splits, dtype, seed):
    from gpusleuth.kernels import DecodeConfig

    q, k, v, table, lens = _decode_case(ctx, hk, ratio, D, block_size, dtype, seed)
    _check_decode(q, k, v, table, lens, D ** -0.5, DecodeConfig(num_splits=splits, block_n=16))


# ---- varlen prefill -----------------------------------------------------------------------------------------------

def _prefill_case(lens, Hk, ratio, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    T = sum(lens)
    Hq = Hk * ratio
    qkv = torch.randn(T, (Hq + 2 * Hk) * D, generator=g).to(dtype)  # q/k/v as strided views, as in an engine
    q = qkv[:, : Hq * D].view(T, Hq, D)
    k = qkv[:, Hq * D:(Hq + Hk) * D].view(T, Hk, D)
    v = qkv[:, (Hq + Hk) * D:].view(T, Hk, D)
    cu = torch.tensor([0] + lens, dtype=torch.int32).cumsum(0).to(torch.int32)
    return q, k, v, cu


def _check_prefill(q, k, v, cu, scale):
    from gpusleuth.kernels import prefill_attention

    out = prefill_attention(q, k, v, cu, scale)
    ref = reference("prefill_attention_ref")(*_f64(q, k, v), cu, scale)
    err = rel_err(out, ref)
    assert err <= ATTN_REL_TOL[q.dtype], f"relative error {err:.2e} > {ATTN_REL_TOL[q.dtype]:.0e}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ratio", [1, 4, 8])
def test_prefill_varlen_gqa(ratio, dtype):
    q, k, v, cu = _prefill_case([1, 0, 65, 20], 1, ratio, 32, dtype, seed=ratio)
    _check_prefill(q, k, v, cu, 32 ** -0.5)


def test_prefill_is_causal_and_separates_sequences():
    """Changing a later token (or another sequence) must not change earlier outputs."""
    from gpusleuth.kernels import prefill_attention

    q, k, v, cu = _prefill_case([10, 12], 1, 4, 16, torch.float32, seed=5)
    before = prefill_attention(q, k, v, cu, 0.25)
    k2, v2 = k.clone(), v.clone()
    k2[7] += 3.0
    v2[7] -= 3.0
    after = prefill_attention(q.contiguous(), k2, v2, cu, 0.25)
    assert torch.equal(after[:7], before[:7]) and torch.equal(after[10:], before[10:])
    assert not torch.allclose(after[7:10], before[7:10])


@SETTINGS
@given(lens=st.lists(st.integers(0, 70), min_size=1, max_size=3), hk=st.integers(1, 2),
       ratio=st.sampled_from([1, 4, 8]), D=st.sampled_from([16, 40, 64]), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_prefill_property(lens, hk, ratio, D, dtype, seed):
    if sum(lens) == 0:
        lens = lens + [1]
    q, k, v, cu = _prefill_case(lens, hk, ratio, D, dtype, seed)
    _check_prefill(q, k, v, cu, D ** -0.5)


# ---- paged (chunked) prefill --------------------------------------------------------------------------------------

def _paged_prefill_case(ctx, q_lens, Hk, ratio, D, block_size, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    k, v, table, lens = make_paged_kv(ctx, Hk, D, block_size, dtype, generator=g)
    q = torch.randn(sum(q_lens), Hk * ratio, D, generator=g).to(dtype)
    cu = torch.tensor([0] + q_lens, dtype=torch.int32).cumsum(0).to(torch.int32)
    return q, k, v, table, cu, lens


def _check_paged_prefill(q, k, v, table, cu, lens, scale):
    from gpusleuth.kernels import paged_prefill_attention

    out = paged_prefill_attention(q, k, v, table, cu, lens, scale)
    ref = reference("paged_prefill_attention_ref")(*_f64(q, k, v), table, cu, lens, scale)
    err = rel_err(out, ref)
    assert err <= ATTN_REL_TOL[q.dtype], f"relative error {err:.2e} > {ATTN_REL_TOL[q.dtype]:.0e}"
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ratio", [1, 4, 8])
def test_paged_prefill_chunks(ratio, dtype):
    # a whole prompt, a later chunk, a one-token chunk
    q, k, v, table, cu, lens = _paged_prefill_case([30, 90, 17], [30, 40, 1], 1, ratio, 32, 16, dtype, seed=ratio)
    _check_paged_prefill(q, k, v, table, cu, lens, 32 ** -0.5)


def test_paged_prefill_one_token_equals_decode():
    from gpusleuth.kernels import paged_decode_attention

    q, k, v, table, cu, lens = _paged_prefill_case([23, 50], [1, 1], 2, 4, 32, 8, torch.float32, seed=8)
    chunk = _check_paged_prefill(q, k, v, table, cu, lens, 0.2)
    decode = paged_decode_attention(q, k, v, table, lens, 0.2)
    assert rel_err(chunk, decode) < 1e-6


@SETTINGS
@given(data=st.data(), n=st.integers(1, 3), hk=st.integers(1, 2), ratio=st.sampled_from([1, 4, 8]),
       D=st.sampled_from([16, 32]), block_size=st.sampled_from([4, 16]), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_paged_prefill_property(data, n, hk, ratio, D, block_size, dtype, seed):
    ctx = data.draw(st.lists(st.integers(1, 70), min_size=n, max_size=n))
    q_lens = [data.draw(st.integers(1, c)) for c in ctx]
    q, k, v, table, cu, lens = _paged_prefill_case(ctx, q_lens, hk, ratio, D, block_size, dtype, seed)
    _check_paged_prefill(q, k, v, table, cu, lens, D ** -0.5)


# ---- wrapper checks -----------------------------------------------------------------------------------------------

def test_attention_wrappers_name_the_bad_argument():
    from gpusleuth.kernels import paged_decode_attention, prefill_attention

    q, k, v, table, lens = _decode_case([5], 2, 4, 16, 16, torch.float32, seed=0)
    with pytest.raises(ValueError, match="block_tables must have dtype int32"):
        paged_decode_attention(q, k, v, table.long(), lens, 0.1)
    with pytest.raises(ValueError, match="Hq % Hk"):
        paged_decode_attention(q[:, :7], k, v, table, lens, 0.1)
    with pytest.raises(ValueError, match="one dtype"):
        paged_decode_attention(q.bfloat16(), k, v, table, lens, 0.1)
    with pytest.raises(ValueError, match="k_cache must be contiguous"):
        paged_decode_attention(q, k.transpose(1, 2), v.transpose(1, 2), table, lens, 0.1)
    with pytest.raises(ValueError, match="context_lens"):
        paged_decode_attention(q, k, v, table, lens.repeat(2), 0.1)
    qp, kp, vp, cu = _prefill_case([4, 4], 1, 4, 16, torch.float32, seed=0)
    with pytest.raises(ValueError, match="cu_seqlens must have dtype int32"):
        prefill_attention(qp, kp, vp, cu.long(), 0.1)
    with pytest.raises(ValueError, match="scale"):
        prefill_attention(qp, kp, vp, cu, -1.0)


def test_decode_and_paged_prefill_clamp_context_to_the_block_table():
    """context_lens past what a block-table row addresses are clamped (memory safety), not read out of bounds."""
    from gpusleuth.kernels import paged_decode_attention, paged_prefill_attention

    q, k, v, table, lens = _decode_case([32, 20], 1, 4, 16, 16, torch.float32, seed=4)  # table rows: 2 blocks
    within = paged_decode_attention(q, k, v, table, torch.tensor([32, 20], dtype=torch.int32), 0.25)
    beyond = paged_decode_attention(q, k, v, table, torch.tensor([500, 20], dtype=torch.int32), 0.25)
    assert torch.equal(within, beyond)
    cu = torch.tensor([0, 1, 2], dtype=torch.int32)
    chunk = paged_prefill_attention(q, k, v, table, cu, torch.tensor([500, 20], dtype=torch.int32), 0.25)
    assert rel_err(chunk[1:], within[1:]) < 1e-6 and not torch.isnan(chunk).any()
