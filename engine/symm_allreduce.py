"""A low-latency all-reduce for small tensors (decode steps) through PyTorch symmetric memory.

Batch-1 decode all-reduces 16 KB twice per layer: NCCL's latency for that (~20 µs on an 8xH200 NVSwitch host,
inferred from bench_engine_tp) is a large share of a TP=4/8 decode step. A one-shot all-reduce, where each rank
reads its peers' buffers directly over NVLink, needs no multicast (which stays off on shared hosts, GPU_HOSTS.md).

Opt-in with GPUSLEUTH_ALLREDUCE=symm (default nccl). Checked at start against NCCL on a known tensor: any error or
mismatch leaves NCCL in place with a warning. Measured on 4xH200 (llama3-70b shapes, 40 layers, batch-1 decode):
TP=4 6.71 ms per token vs 7.12 with NCCL. Known problem: a second TP engine started in the same process (as the
GPU token test does) hung there, so it stays off by default.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger("gpusleuth.engine")


class SymmetricAllReduce:
    def __init__(self, group, device: torch.device, dtype: torch.dtype, max_bytes: int) -> None:
        import torch.distributed._symmetric_memory as symm_mem  # CUDA builds only

        self.dtype, self.max_numel = dtype, max_bytes // torch.empty((), dtype=dtype).element_size()
        self.group_name = (group or dist.group.WORLD).group_name
        self.buf = symm_mem.empty(self.max_numel, device=device, dtype=dtype)
        symm_mem.rendezvous(self.buf, self.group_name)

    def can_run(self, x: torch.Tensor) -> bool:
        return x.dtype == self.dtype and x.numel() <= self.max_numel and x.is_contiguous()

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        n = x.numel()
        self.buf[:n].copy_(x.view(-1))
        return torch.ops.symm_mem.one_shot_all_reduce(self.buf[:n], "sum", self.group_name).view_as(x)


def maybe_symmetric(group, device: torch.device, dtype: torch.dtype, max_bytes: int = 512 << 10
                    ) -> SymmetricAllReduce | None:
    """The symmetric all-reduce when asked for and verified against NCCL here (collective: every rank calls it)."""
    if device.type != "cuda" or os.environ.get("GPUSLEUTH_ALLREDUCE", "nccl") != "symm":
        return None
    ok = torch.ones(1, device=device)
    try:
        sym = SymmetricAllReduce(group, device, dtype, max_bytes)
        probe = torch.arange(4096, device=device, dtype=dtype) % 7 + dist.get_rank(group)
        want = probe.clone()
        dist.all_reduce(want, group=group)
        got = sym.all_reduce(probe)
        if not torch.equal(got, want):
            raise RuntimeError("one-shot all-reduce disagrees with NCCL")
    except Exception as exc:  # noqa: BLE001 - any failure means: keep NCCL
        log.warning("symmetric-memory all-reduce unavailable, using NCCL: %s", exc)
        ok.zero_()
        sym = None
    dist.all_reduce(ok, op=dist.ReduceOp.MIN, group=group)  # every rank uses it, or none does
    if ok.item() < 1:
        return None
    log.info("all-reduce: symmetric memory (one-shot) up to %d KiB, NCCL above", max_bytes >> 10)
    return sym
