"""The kernel comparisons of tests/test_kernels_*.py compiled for a CUDA GPU, at small, odd and Llama-3-8B shapes.

Tolerances: elementwise kernels within 64 ulps (float32) or 2 eps of the value (bf16: the GPU rounds to nearest
like torch; differences come only from reduction order); attention vs a float64 reference of the same inputs,
||out - ref|| / ||ref|| <= 1e-5 (float32, proves tl.dot runs in true fp32, not tf32) or 1.5e-2 (bf16).
Outputs start as NaN (poisoned) and the torch fallbacks are disabled, so a pass means the Triton kernel ran.
Property-based (hypothesis) cases are in test_kernels_gpu_property.py (the GPU hosts may lack hypothesis).
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for kernels_helpers

from kernels_helpers import (ATTN_REL_TOL, assert_elementwise_close, forbid_references,  # noqa: E402
                             make_paged_kv, poisoned_outputs, reference, rel_err)  # noqa: F401

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA"),
              pytest.mark.usefixtures("gpu_kernels")]
DEV = "cuda"
DTYPES = [torch.float32, torch.bfloat16]
GPU_ULPS = {torch.float32: 64, torch.bfloat16: 2, torch.float16: 2}


@pytest.fixture
def gpu_kernels(monkeypatch, poisoned_outputs):  # noqa: F811
    pytest.importorskip("triton", reason="triton is not installed")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # compile for the GPU
    forbid_references(monkeypatch)


def _rand(*shape, dtype, scale=1.0):
    return (torch.randn(*shape, device=DEV) * scale).to(dtype)


def _f64(*tensors):
    return [t.double() if t.is_floating_point() else t for t in tensors]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 4096), (32, 4096), (7, 37), (3, 5, 130), (513, 8192)])
def test_rms_norm_gpu(shape, dtype):
    from gpusleuth.kernels import add_rms_norm, rms_norm

    x, r, w = _rand(*shape, dtype=dtype, scale=3.0), _rand(*shape, dtype=dtype), _rand(shape[-1], dtype=dtype)
    assert_elementwise_close(rms_norm(x, w, 1e-5), reference("rms_norm_ref")(x, w, 1e-5), ulps=GPU_ULPS[dtype])
    out, res = add_rms_norm(x, r, w, 1e-5)
    ref_out, ref_res = reference("add_rms_norm_ref")(x, r, w, 1e-5)
    assert torch.equal(res, ref_res), "x + residual must round exactly like torch"
    assert_elementwise_close(out, ref_out, ulps=GPU_ULPS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,Hq,Hk,D", [(1, 32, 8, 128), (300, 32, 8, 128), (5, 6, 3, 10), (4, 8, 1, 64)])
def test_rope_gpu(T, Hq, Hk, D, dtype):
    from gpusleuth.kernels import build_rope_cache, rope_

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    cache = build_rope_cache(131072, D, 500000.0, scaling, DEV, torch.float32)
    qkv = _rand(T, (Hq + 2 * Hk) * D, dtype=dtype)
    q, k = qkv[:, : Hq * D].view(T, Hq, D), qkv[:, Hq * D:(Hq + Hk) * D].view(T, Hk, D)
    pos = torch.randint(0, 131072, (T,), device=DEV)
    q_ref, k_ref = q.clone(), k.clone()
    reference("rope_ref_")(q_ref, k_ref, pos, cache)
    rope_(q, k, pos, cache)
    bound = q_ref.abs().max().item()
    assert_elementwise_close(q, q_ref, scale=bound, ulps=GPU_ULPS[dtype])
    assert_elementwise_close(k, k_ref, scale=bound, ulps=GPU_ULPS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,inter", [(1, 14336), (64, 14336), (3, 37)])
def test_swiglu_gpu(T, inter, dtype):
    from gpusleuth.kernels import swiglu

    x = _rand(T, 2 * inter, dtype=dtype, scale=4.0)
    assert_elementwise_close(swiglu(x), reference("swiglu_ref")(x), ulps=GPU_ULPS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 32, 1, 4096), (2, 8, 65, 65), (1, 4, 3, 9000)])
def test_causal_softmax_gpu(shape, dtype):
    from gpusleuth.kernels import scaled_causal_softmax

    s = _rand(*shape, dtype=dtype, scale=5.0)
    assert_elementwise_close(scaled_causal_softmax(s, 0.088), reference("scaled_causal_softmax_ref")(s, 0.088),
                             scale=1e-3, ulps=256 if dtype == torch.float32 else 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ratio", [1, 4, 8])
@pytest.mark.parametrize("ctx", [[1, 17, 300], [4096, 100], [20000]])
def test_paged_decode_gpu(ctx, ratio, dtype):
    from gpusleuth.kernels import paged_decode_attention

    k, v, table, lens = make_paged_kv(ctx, 8 // min(ratio, 4), 128, 16, dtype, device=DEV)
    q = _rand(len(ctx), k.shape[2] * ratio, 128, dtype=dtype)
    out = paged_decode_attention(q, k, v, table, lens, 128 ** -0.5)
    ref = reference("paged_decode_attention_ref")(*_f64(q, k, v), table, lens, 128 ** -0.5)
    assert rel_err(out, ref) <= ATTN_REL_TOL[dtype]


def test_paged_decode_gpu_cuda_graph():
    """The decode wrapper needs no host sync, so a CUDA graph can capture it; replays follow new inputs."""
    from gpusleuth.kernels import paged_decode_attention

    k, v, table, lens = make_paged_kv([700, 33, 2048], 8, 128, 16, torch.bfloat16, device=DEV)
    q = _rand(3, 32, 128, dtype=torch.bfloat16)
    paged_decode_attention(q, k, v, table, lens, 0.088)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = paged_decode_attention(q, k, v, table, lens, 0.088)
    q.copy_(_rand(3, 32, 128, dtype=torch.bfloat16))
    lens.copy_(torch.tensor([701, 34, 1], dtype=torch.int32))
    graph.replay()
    ref = reference("paged_decode_attention_ref")(*_f64(q, k, v), table, lens, 0.088)
    assert rel_err(out, ref) <= ATTN_REL_TOL[torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ratio", [1, 4, 8])
def test_prefill_gpu(ratio, dtype):
    from gpusleuth.kernels import prefill_attention

    lens = [1, 0, 129, 1000, 64]
    Hk, D = 2, 128
    T, Hq = sum(lens), Hk * ratio
    qkv = _rand(T, (Hq + 2 * Hk) * D, dtype=dtype)
    q = qkv[:, : Hq * D].view(T, Hq, D)
    k = qkv[:, Hq * D:(Hq + Hk) * D].view(T, Hk, D)
    v = qkv[:, (Hq + Hk) * D:].view(T, Hk, D)
    cu = torch.tensor([0] + lens, device=DEV).cumsum(0).to(torch.int32)
    out = prefill_attention(q, k, v, cu, D ** -0.5)
    ref = reference("prefill_attention_ref")(*_f64(q, k, v), cu, D ** -0.5)
    assert rel_err(out, ref) <= ATTN_REL_TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ratio", [1, 4, 8])
def test_paged_prefill_gpu(ratio, dtype):
    from gpusleuth.kernels import paged_prefill_attention

    ctx, q_lens = [300, 1000, 17], [300, 256, 1]
    k, v, table, lens = make_paged_kv(ctx, 2, 128, 16, dtype, device=DEV)
    q = _rand(sum(q_lens), 2 * ratio, 128, dtype=dtype)
    cu = torch.tensor([0] + q_lens, device=DEV).cumsum(0).to(torch.int32)
    out = paged_prefill_attention(q, k, v, table, cu, lens, 128 ** -0.5)
    ref = reference("paged_prefill_attention_ref")(*_f64(q, k, v), table, cu, lens, 128 ** -0.5)
    assert rel_err(out, ref) <= ATTN_REL_TOL[dtype]
