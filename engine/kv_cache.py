"""Paged KV cache: a free-list block allocator and the per-layer cache tensors.

Block 0 is reserved as a scratch block: padded rows of a CUDA-graph batch write their keys there, so it is never
handed out and "full" means every other block is free.
"""
from __future__ import annotations

import torch

from gpusleuth.engine.config import ModelConfig

NULL_BLOCK = 0


def blocks_needed(num_tokens: int, block_size: int) -> int:
    return (num_tokens + block_size - 1) // block_size


class BlockAllocator:
    """Hands out fixed-size KV blocks; O(1) allocate/free from a free list."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        assert num_blocks >= 2, "need the scratch block plus at least one usable block"
        self.block_size = block_size
        self.num_blocks = num_blocks
        self._free = list(range(num_blocks - 1, NULL_BLOCK, -1))  # pop() hands out low ids first

    @property
    def num_usable(self) -> int:
        return self.num_blocks - 1

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of usable blocks in use (vllm:kv_cache_usage_perc is this, 0..1)."""
        return 1.0 - self.num_free / self.num_usable

    def can_allocate(self, num: int) -> bool:
        return num <= len(self._free)

    def allocate(self, num: int) -> list[int]:
        assert self.can_allocate(num), f"asked for {num} blocks with {self.num_free} free"
        return [self._free.pop() for _ in range(num)]

    def free(self, blocks: list[int]) -> None:
        self._free.extend(reversed(blocks))


def bytes_per_block(cfg: ModelConfig, tp: int, block_size: int, dtype: torch.dtype) -> int:
    """KV bytes one block takes on one rank, summed over layers (keys and values)."""
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_layers * block_size * (cfg.num_kv_heads // tp) * cfg.head_dim * elem


def num_blocks_for_memory(free_bytes: int, fraction: float, cfg: ModelConfig, tp: int, block_size: int,
                          dtype: torch.dtype) -> int:
    """How many blocks fit in `fraction` of `free_bytes` on one rank."""
    return int(free_bytes * fraction) // bytes_per_block(cfg, tp, block_size, dtype)


def allocate_caches(num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                    dtype: torch.dtype, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (k_cache, v_cache), each [num_blocks, block_size, num_kv_heads, head_dim], zeroed."""
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    return [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(num_layers)]
