"""RMSNorm, add+RMSNorm, RoPE, SwiGLU and causal softmax Triton kernels vs their torch references, run in the
Triton CPU interpreter (TRITON_INTERPRET=1, set per test by the ``triton_interpret`` fixture).

Tolerances (kernels_helpers): float32 within 64 ulps of the float32 reference (reductions summed in another
order); bf16/fp16 within 3 eps of the value (the interpreter truncates each down-cast, the GPU rounds to nearest).
Inputs are fresh random draws; outputs start as NaN (poisoned) so unwritten elements fail.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels_helpers import assert_elementwise_close, reference

pytestmark = pytest.mark.usefixtures("triton_interpret")
from kernels_helpers import poisoned_outputs, triton_interpret  # noqa: E402,F401  (fixtures)

DTYPES = [torch.float32, torch.bfloat16]
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
dtype_st = st.sampled_from([torch.float32, torch.bfloat16, torch.float16])


def _rand(*shape, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


# ---- RMSNorm / add + RMSNorm -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 64), (7, 37), (3, 5, 130), (2, 1000)])
def test_rms_norm_matches_reference(shape, dtype):
    from gpusleuth.kernels import rms_norm

    x, w = _rand(*shape, dtype=dtype, seed=1, scale=3.0), _rand(shape[-1], dtype=dtype, seed=2)
    assert_elementwise_close(rms_norm(x, w, 1e-5), reference("rms_norm_ref")(x, w, 1e-5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_rms_norm_matches_reference_and_returns_sum(dtype):
    from gpusleuth.kernels import add_rms_norm

    x, r, w = (_rand(9, 300, dtype=dtype, seed=s) for s in (3, 4, 5))
    w = w[0]
    out, new_res = add_rms_norm(x, r, w, 1e-6)
    ref_out, ref_res = reference("add_rms_norm_ref")(x, r, w, 1e-6)
    assert_elementwise_close(new_res, ref_res, ulps=1)
    assert_elementwise_close(out, ref_out)


def test_rms_norm_strided_rows_and_large_eps():
    """Rows of a wider buffer (stride(0) != H) and an eps that dominates small rows."""
    from gpusleuth.kernels import rms_norm

    buf = _rand(6, 96, dtype=torch.float32, seed=6, scale=1e-3)
    x = buf[:, 10:74]  # [6, 64], stride(0) = 96
    w = _rand(64, dtype=torch.float32, seed=7)
    assert_elementwise_close(rms_norm(x, w, 0.5), reference("rms_norm_ref")(x, w, 0.5))


def test_rms_norm_many_rows_takes_several_rows_per_program():
    """From 1024 rows on, programs handle a tile of rows; a row count not divisible by it leaves a tail."""
    import gpusleuth.kernels.rmsnorm as rms

    assert rms._launch_params(1027, 64, 2)[0] > 1
    x, w = _rand(1027, 64, dtype=torch.bfloat16, seed=12), _rand(64, dtype=torch.bfloat16, seed=13)
    assert_elementwise_close(rms.rms_norm(x, w, 1e-5), reference("rms_norm_ref")(x, w, 1e-5))


@SETTINGS
@given(rows=st.integers(1, 9), hidden=st.integers(1, 300), dtype=dtype_st, seed=st.integers(0, 2**16),
       eps=st.sampled_from([1e-6, 1e-5, 1e-2]), per_program=st.sampled_from([None, 1, 2, 4]))
def test_rms_norm_property(rows, hidden, dtype, seed, eps, per_program):
    import gpusleuth.kernels.rmsnorm as rms
    from gpusleuth.kernels import add_rms_norm

    x, r = _rand(rows, hidden, dtype=dtype, seed=seed), _rand(rows, hidden, dtype=dtype, seed=seed + 1)
    w = _rand(hidden, dtype=dtype, seed=seed + 2)
    out = rms._launch(x, w, eps, None, rows_per_program=per_program)[0]  # the tuning path the benchmark sweeps
    assert_elementwise_close(out, reference("rms_norm_ref")(x, w, eps))
    out, res = add_rms_norm(x, r, w, eps)
    ref_out, ref_res = reference("add_rms_norm_ref")(x, r, w, eps)
    assert_elementwise_close(res, ref_res, ulps=1)
    assert_elementwise_close(out, ref_out)


# ---- RoPE ---------------------------------------------------------------------------------------------------------

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}


def _rope_case(T, Hq, Hk, D, dtype, seed, max_pos=4096, cache_dtype=torch.float32):
    from gpusleuth.kernels import build_rope_cache

    g = torch.Generator().manual_seed(seed)
    cache = build_rope_cache(max_pos, D, 500000.0, LLAMA3_SCALING, "cpu", cache_dtype)
    pos = torch.randint(0, max_pos, (T,), generator=g)
    # q and k as strided views of one fused qkv buffer, the way an engine produces them
    qkv = _rand(T, (Hq + 2 * Hk) * D, dtype=dtype, seed=seed)
    q = qkv[:, : Hq * D].view(T, Hq, D)
    k = qkv[:, Hq * D:(Hq + Hk) * D].view(T, Hk, D)
    return q, k, pos, cache, qkv


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,Hq,Hk,D", [(1, 8, 8, 64), (5, 32, 8, 128), (3, 8, 1, 16), (4, 6, 3, 10)])
def test_rope_in_place_matches_reference(T, Hq, Hk, D, dtype):
    from gpusleuth.kernels import rope_

    q, k, pos, cache, qkv = _rope_case(T, Hq, Hk, D, dtype, seed=T * 7 + Hq)
    q_ref, k_ref = q.clone(), k.clone()
    v_before = qkv[:, (Hq + Hk) * D:].clone()
    reference("rope_ref_")(q_ref, k_ref, pos, cache)
    rope_(q, k, pos, cache)
    bound = q_ref.abs().max().item()
    assert_elementwise_close(q, q_ref, scale=bound)
    assert_elementwise_close(k, k_ref, scale=bound)
    assert torch.equal(qkv[:, (Hq + Hk) * D:], v_before), "rope_ wrote outside q and k"


def test_rope_moves_values_and_position_zero_is_identity():
    """Position 0 leaves q unchanged; other positions change it (guards against a kernel that does nothing)."""
    from gpusleuth.kernels import build_rope_cache, rope_

    cache = build_rope_cache(64, 32, 10000.0, None, "cpu", torch.float32)
    q, k = _rand(2, 4, 32, dtype=torch.float32, seed=9), _rand(2, 2, 32, dtype=torch.float32, seed=10)
    q0, k0 = q.clone(), k.clone()
    rope_(q, k, torch.tensor([0, 17]), cache)
    assert torch.equal(q[0], q0[0]) and torch.equal(k[0], k0[0])
    assert (q[1] - q0[1]).abs().max() > 0.1
    assert torch.allclose(q[1].norm(dim=-1), q0[1].norm(dim=-1), rtol=1e-5)  # a rotation keeps norms


@SETTINGS
@given(T=st.integers(1, 5), hk=st.integers(1, 3), ratio=st.sampled_from([1, 4, 8]),
       half=st.integers(1, 40), dtype=dtype_st, seed=st.integers(0, 2**16),
       cache_dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_rope_property(T, hk, ratio, half, dtype, seed, cache_dtype):
    from gpusleuth.kernels import rope_

    q, k, pos, cache, _ = _rope_case(T, hk * ratio, hk, 2 * half, dtype, seed, max_pos=512, cache_dtype=cache_dtype)
    q_ref, k_ref = q.clone(), k.clone()
    reference("rope_ref_")(q_ref, k_ref, pos, cache)
    rope_(q, k, pos, cache)
    bound = max(q_ref.abs().max().item(), k_ref.abs().max().item())
    assert_elementwise_close(q, q_ref, scale=bound)
    assert_elementwise_close(k, k_ref, scale=bound)


def test_llama3_cache_matches_transformers():
    """build_rope_cache with llama3 scaling equals Hugging Face's LlamaRotaryEmbedding (Llama-3-8B config)."""
    transformers = pytest.importorskip("transformers")
    from gpusleuth.kernels import build_rope_cache
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = transformers.LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                                   rope_theta=500000.0, max_position_embeddings=131072, rope_scaling=LLAMA3_SCALING)
    emb = LlamaRotaryEmbedding(cfg)
    pos = torch.tensor([0, 1, 2, 100, 4095, 8191, 8192, 50000, 131071])
    cos, sin = emb(torch.zeros(1), pos[None])
    cache = build_rope_cache(131072, 128, 500000.0, LLAMA3_SCALING, "cpu", torch.float32)
    torch.testing.assert_close(cache[pos, :64].repeat(1, 2), cos[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(cache[pos, 64:].repeat(1, 2), sin[0], rtol=0, atol=1e-6)
    plain = build_rope_cache(131072, 128, 500000.0, None, "cpu", torch.float32)
    assert (plain[pos[-1], :64] - cache[pos[-1], :64]).abs().max() > 0.1, "scaling must change low frequencies"


def test_build_rope_cache_rejects_unknown_scaling():
    from gpusleuth.kernels import build_rope_cache

    with pytest.raises(ValueError, match="yarn"):
        build_rope_cache(16, 8, 10000.0, {"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match="low_freq_factor"):
        build_rope_cache(16, 8, 10000.0, {"rope_type": "llama3", "factor": 2.0})


# ---- SwiGLU -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,inter", [(1, 8), (3, 37), (2, 2500)])
def test_swiglu_matches_reference(T, inter, dtype):
    from gpusleuth.kernels import swiglu

    x = _rand(T, 2 * inter, dtype=dtype, seed=inter, scale=4.0)
    assert_elementwise_close(swiglu(x), reference("swiglu_ref")(x))


@SETTINGS
@given(T=st.integers(1, 5), inter=st.integers(1, 600), dtype=dtype_st, seed=st.integers(0, 2**16),
       pad=st.integers(0, 5))
def test_swiglu_property(T, inter, dtype, seed, pad):
    from gpusleuth.kernels import swiglu

    buf = _rand(T, 2 * inter + pad, dtype=dtype, seed=seed, scale=3.0)
    x = buf[:, pad:]  # strided rows
    assert_elementwise_close(swiglu(x), reference("swiglu_ref")(x))


# ---- scale + causal mask + softmax ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 5), (1, 2, 3, 11), (1, 1, 4, 300)])
def test_causal_softmax_matches_reference(shape, dtype):
    from gpusleuth.kernels import scaled_causal_softmax

    s = _rand(*shape, dtype=dtype, seed=sum(shape), scale=5.0)
    out = scaled_causal_softmax(s, 0.125)
    ref = reference("scaled_causal_softmax_ref")(s, 0.125)
    assert_elementwise_close(out, ref, scale=1e-3)
    sq, sk = shape[-2:]
    future = torch.arange(sk)[None, :] > torch.arange(sq)[:, None] + (sk - sq)
    assert (out[..., future] == 0).all(), "masked (future) keys must get exactly 0"


def test_causal_softmax_long_rows_use_the_looped_path(monkeypatch):
    """Rows longer than MAX_SINGLE_BLOCK take the two-pass path; force it with small limits."""
    import gpusleuth.kernels.softmax as sm

    monkeypatch.setattr(sm, "MAX_SINGLE_BLOCK", 32)
    monkeypatch.setattr(sm, "LOOP_BLOCK", 16)
    s = _rand(1, 2, 7, 70, dtype=torch.float32, seed=11, scale=4.0)
    assert_elementwise_close(sm.scaled_causal_softmax(s, 0.5), reference("scaled_causal_softmax_ref")(s, 0.5))


@SETTINGS
@given(b=st.integers(1, 2), h=st.integers(1, 3), sq=st.integers(1, 6), extra=st.integers(0, 40),
       dtype=dtype_st, seed=st.integers(0, 2**16), scale=st.floats(0.01, 2.0))
def test_causal_softmax_property(b, h, sq, extra, dtype, seed, scale):
    from gpusleuth.kernels import scaled_causal_softmax

    s = _rand(b, h, sq, sq + extra, dtype=dtype, seed=seed, scale=3.0)
    assert_elementwise_close(scaled_causal_softmax(s, scale), reference("scaled_causal_softmax_ref")(s, scale),
                             scale=1e-3)


# ---- wrapper checks -----------------------------------------------------------------------------------------------

def test_wrappers_name_the_bad_argument():
    from gpusleuth.kernels import rms_norm, rope_, scaled_causal_softmax, swiglu

    x = torch.randn(4, 16)
    with pytest.raises(ValueError, match="weight must have shape"):
        rms_norm(x, torch.randn(8), 1e-5)
    with pytest.raises(ValueError, match="one dtype"):
        rms_norm(x, torch.randn(16, dtype=torch.bfloat16), 1e-5)
    with pytest.raises(ValueError, match="x must be contiguous in its last dimension"):
        rms_norm(x.t(), torch.randn(4), 1e-5)
    with pytest.raises(ValueError, match="eps"):
        rms_norm(x, torch.randn(16), 0.0)
    with pytest.raises(ValueError, match="even"):
        swiglu(torch.randn(2, 7))
    with pytest.raises(ValueError, match="Sk >= Sq"):
        scaled_causal_softmax(torch.randn(1, 1, 4, 3), 1.0)
    with pytest.raises(ValueError, match="positions must have T=2"):
        rope_(torch.randn(2, 2, 8), torch.randn(2, 1, 8), torch.tensor([0]), torch.randn(4, 8))
    with pytest.raises(ValueError, match="int64/int32"):
        rope_(torch.randn(2, 2, 8), torch.randn(2, 1, 8), torch.tensor([0.0, 1.0]), torch.randn(4, 8))
