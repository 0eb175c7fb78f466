"""The one place the engine picks its tensor ops: fused Triton kernels on CUDA, their torch references elsewhere.

Every op comes from `gpusleuth.kernels`, whose interface is what that package exports plus each wrapper's checks;
the engine never re-implements them. The only op defined here is the KV-cache write, which is plain indexing and
not part of the kernels' interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from gpusleuth.probes.config import ConfigError

_OPS = ("rms_norm", "add_rms_norm", "rope_", "swiglu", "paged_decode_attention", "prefill_attention",
        "paged_prefill_attention")


@dataclass(slots=True, frozen=True)
class Ops:
    """A bound set of ops; `is_fused` says which implementation was chosen (reported in logs and /metrics)."""

    is_fused: bool
    rms_norm: Callable
    add_rms_norm: Callable
    rope_: Callable
    swiglu: Callable
    paged_decode_attention: Callable
    prefill_attention: Callable  # (q, k, v, cu_seqlens, scale, max_seqlen=)
    paged_prefill_attention: Callable  # (q, k_cache, v_cache, block_tables, cu_q, context_lens, scale, max_seqlen=)
    build_rope_cache: Callable

    @property
    def name(self) -> str:
        return "fused" if self.is_fused else "torch"


def select_ops(kernels: str, device: torch.device) -> Ops:
    """Bind the ops for `kernels` ("auto", "fused" or "torch") on `device`.

    auto = fused when the device is CUDA and Triton can run there. "fused" also works on CPU under
    TRITON_INTERPRET=1 (slow; for kernel debugging); elsewhere it is a user error.
    """
    from gpusleuth import kernels as k  # imported here so `--help` and config errors need no triton

    can_fuse = k.is_triton_available(device)
    if kernels == "fused" and not can_fuse:
        raise ConfigError("kernels", f"fused Triton kernels need a CUDA device with Triton (or TRITON_INTERPRET=1); "
                                     f"got {device}. Use --kernels torch (or auto)")
    is_fused = kernels == "fused" or (kernels == "auto" and can_fuse and device.type == "cuda")
    bound = {name: getattr(k, name if is_fused else name.rstrip("_") + "_ref") for name in _OPS}
    # One prefill signature with a `max_seqlen` hint: the fused kernels use it to skip a device sync, the
    # references need none.
    if is_fused:
        paged = k.paged_prefill_attention
        bound["paged_prefill_attention"] = lambda *args, max_seqlen=None: paged(*args, max_seqlen_q=max_seqlen)
    else:
        for name in ("prefill_attention", "paged_prefill_attention"):
            bound[name] = _ignore_max_seqlen(bound[name])
    return Ops(is_fused=is_fused, build_rope_cache=k.build_rope_cache, **bound)


def _ignore_max_seqlen(fn: Callable) -> Callable:
    return lambda *args, max_seqlen=None: fn(*args)


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Store this step's keys/values at their cache slots.

    k_cache/v_cache: [num_blocks, block_size, Hk, D]; k/v: [T, Hk, D]; slot_mapping: [T] int64 (block*bs + offset).
    """
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slot_mapping, k)
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slot_mapping, v)
