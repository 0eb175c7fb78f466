"""Property-based (hypothesis) GPU comparisons of the kernels with their torch references; tolerances as in
test_kernels_gpu.py. Skipped where hypothesis is not installed (the GPU hosts do not ship it: bring its wheel)."""

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("hypothesis", reason="hypothesis is not installed: the property-based GPU cases cannot run")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for kernels_helpers
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels_helpers import ATTN_REL_TOL, assert_elementwise_close, make_paged_kv, reference, rel_err  # noqa: E402
from test_kernels_gpu import DEV, DTYPES, GPU_ULPS, _f64, _rand, gpu_kernels, poisoned_outputs  # noqa: E402,F401

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA"),
              pytest.mark.usefixtures("gpu_kernels")]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(rows=st.integers(1, 300), hidden=st.integers(1, 9000), inter=st.integers(1, 5000),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31))
def test_elementwise_property_gpu(rows, hidden, inter, dtype, seed):
    from gpusleuth.kernels import rms_norm, swiglu

    torch.manual_seed(seed)  # a failing example replays with the same tensors
    x, w = _rand(rows, hidden, dtype=dtype), _rand(hidden, dtype=dtype)
    assert_elementwise_close(rms_norm(x, w, 1e-6), reference("rms_norm_ref")(x, w, 1e-6), ulps=GPU_ULPS[dtype])
    g = _rand(rows, 2 * inter, dtype=dtype, scale=3.0)
    assert_elementwise_close(swiglu(g), reference("swiglu_ref")(g), ulps=GPU_ULPS[dtype])


@SETTINGS
@given(ctx=st.lists(st.integers(1, 5000), min_size=1, max_size=6), hk=st.sampled_from([1, 2, 8]),
       ratio=st.sampled_from([1, 4, 8]), D=st.sampled_from([64, 80, 128]), block_size=st.sampled_from([16, 32]),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31))
def test_paged_decode_property_gpu(ctx, hk, ratio, D, block_size, dtype, seed):
    from gpusleuth.kernels import paged_decode_attention

    torch.manual_seed(seed)
    k, v, table, lens = make_paged_kv(ctx, hk, D, block_size, dtype, device=DEV)
    q = _rand(len(ctx), hk * ratio, D, dtype=dtype)
    out = paged_decode_attention(q, k, v, table, lens, D ** -0.5)
    ref = reference("paged_decode_attention_ref")(*_f64(q, k, v), table, lens, D ** -0.5)
    assert rel_err(out, ref) <= ATTN_REL_TOL[dtype]
