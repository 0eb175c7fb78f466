"""Dispatch between Triton kernels and torch references, and the launch-time choice of compiled vs interpreted mode.

These run without a GPU and mostly without the interpreter: they check what the wrappers do where Triton cannot
run (CPU, TRITON_INTERPRET unset) and that one kernel object serves both modes in one process.
"""

import pytest
import torch

from kernels_helpers import poisoned_outputs, triton_interpret  # noqa: F401  (fixtures)

triton = pytest.importorskip("triton", reason="triton is not installed (needs the gpusleuth[engine] extra, x86_64)")


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _no_launch(monkeypatch):
    from gpusleuth.kernels import _runtime

    def refuse(self, grid):
        raise AssertionError(f"{self.fn.__name__} was launched although Triton cannot run here")

    monkeypatch.setattr(_runtime.LazyKernel, "__getitem__", refuse)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback; this host has a GPU")
def test_cpu_without_interpreter_uses_references(no_interpreter, monkeypatch):
    import gpusleuth.kernels as K

    assert not K.interpret_enabled()
    assert not K.is_triton_available("cpu") and not K.is_triton_available(torch.device("cuda"))
    _no_launch(monkeypatch)
    g = torch.Generator().manual_seed(0)
    x, r, w = (torch.randn(3, 32, generator=g) for _ in range(3))
    assert torch.equal(K.rms_norm(x, w[0], 1e-5), K.rms_norm_ref(x, w[0], 1e-5))
    out, res = K.add_rms_norm(x, r, w[0], 1e-5)
    assert torch.equal(res, x + r) and torch.equal(out, K.rms_norm_ref(x + r, w[0], 1e-5))
    assert torch.equal(K.swiglu(x), K.swiglu_ref(x))
    s = torch.randn(1, 2, 3, 5, generator=g)
    assert torch.equal(K.scaled_causal_softmax(s, 0.5), K.scaled_causal_softmax_ref(s, 0.5))
    q, k = torch.randn(2, 4, 8, generator=g), torch.randn(2, 2, 8, generator=g)
    q2, k2 = q.clone(), k.clone()
    cache = K.build_rope_cache(16, 8, 10000.0)
    K.rope_(q, k, torch.tensor([1, 5]), cache)
    K.rope_ref_(q2, k2, torch.tensor([1, 5]), cache)
    assert torch.equal(q, q2) and torch.equal(k, k2)


def test_wrappers_check_arguments_even_when_falling_back(no_interpreter):
    import gpusleuth.kernels as K

    with pytest.raises(ValueError, match="weight must have shape"):
        K.rms_norm(torch.randn(2, 8), torch.randn(4), 1e-5)


def test_one_kernel_object_serves_both_modes(monkeypatch, triton_interpret):
    """Interpreted at one launch, compiled-mode JITFunction built at another: the mode is read per launch."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    import gpusleuth.kernels as K
    from gpusleuth.kernels.swiglu import _swiglu_kernel

    x = torch.randn(2, 8)
    torch.testing.assert_close(K.swiglu(x), torch.nn.functional.silu(x[:, :4]) * x[:, 4:])
    assert isinstance(_swiglu_kernel._built[True], InterpretedFunction)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not K.interpret_enabled()
    _swiglu_kernel[(1,)]  # builds (does not compile or launch) the compiled-mode kernel
    assert isinstance(_swiglu_kernel._built[False], JITFunction)


def test_is_triton_available_under_interpreter(triton_interpret):
    import gpusleuth.kernels as K

    assert K.is_triton_available("cpu")
    assert K.is_triton_available(torch.device("cpu"))
