"""gpusleuth.kernels: fused Triton kernels for the bundled engine, each with a torch reference (``*_ref``).

Every wrapper checks shapes, dtypes and strides (``ValueError`` naming the problem), then runs its Triton kernel
where ``is_triton_available(device)`` (CUDA with triton, or any device under ``TRITON_INTERPRET=1``) and its torch
reference otherwise. The interface is what this module exports (``__all__``) plus each wrapper's checks.
"""

from ._runtime import interpret_enabled, is_triton_available
from .attention_decode import DecodeConfig, paged_decode_attention, paged_decode_attention_ref
from .attention_prefill import (paged_prefill_attention, paged_prefill_attention_ref, prefill_attention,
                                prefill_attention_ref)
from .rmsnorm import add_rms_norm, add_rms_norm_ref, rms_norm, rms_norm_ref
from .rope import build_rope_cache, rope_, rope_ref_
from .softmax import scaled_causal_softmax, scaled_causal_softmax_ref
from .swiglu import swiglu, swiglu_ref

rope_ref = rope_ref_  # the reference of rope_, also under the plain *_ref name

__all__ = [
    "DecodeConfig", "add_rms_norm", "add_rms_norm_ref", "build_rope_cache", "interpret_enabled",
    "is_triton_available", "paged_decode_attention", "paged_decode_attention_ref", "paged_prefill_attention",
    "paged_prefill_attention_ref", "prefill_attention", "prefill_attention_ref", "rms_norm", "rms_norm_ref",
    "rope_", "rope_ref", "rope_ref_", "scaled_causal_softmax", "scaled_causal_softmax_ref", "swiglu", "swiglu_ref",
]
