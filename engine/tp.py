"""Tensor parallelism as an opt-in step on the single-device model (a no-op at world size 1).

`apply_tp(model, rank, world_size)` swaps layers for vLLM-named parallel ones, with weights still unloaded:
each layer's `weight_loader` then reads only this rank's slice of a checkpoint tensor (safetensors `get_slice`).
Column-parallel layers shard output rows, row-parallel layers shard input columns and all-reduce their output,
the vocabulary embedding shards rows and all-reduces, the LM head shards rows and all-gathers logits.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from gpusleuth.probes.config import ConfigError
from gpusleuth.engine.config import ModelConfig
from gpusleuth.engine.model import Embedding, Linear, LlamaForCausalLM

# Called before each all-reduce with this rank (fault injection: see faults.py); None = no hook.
AllReduceHook = Callable[[], None]


class _Comm:
    """The process group and the optional pre-all-reduce hook shared by all parallel layers of one model."""

    def __init__(self, rank: int, world_size: int, group=None) -> None:
        self.rank, self.world_size, self.group = rank, world_size, group
        self.pre_all_reduce: AllReduceHook | None = None
        self.small = None  # symm_allreduce.SymmetricAllReduce for small tensors, when enabled

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_all_reduce is not None:
            self.pre_all_reduce()
        if self.small is not None and self.small.can_run(x):
            return self.small.all_reduce(x)
        dist.all_reduce(x, group=self.group)
        return x


def _divide(total: int, parts: int, what: str) -> int:
    if total % parts:
        raise ConfigError("tp", f"{parts} does not divide the model's {what} ({total}); choose another --tp")
    return total // parts


class ColumnParallelLinear(Linear):
    """Output rows sharded; every named split (gate/up, q/k/v) is sharded on its own so merges stay aligned."""

    def __init__(self, base: Linear, comm: _Comm) -> None:
        splits = {n: _divide(r, comm.world_size, f"rows of {n}") for n, r in base.splits.items()}
        out = sum(splits.values()) if splits else _divide(base.weight.shape[0], comm.world_size, "output features")
        super().__init__(base.weight.shape[1], out, splits)
        self.comm = comm

    def weight_loader(self, tensor_slice, split: str | None = None) -> None:
        offset, rows = self.split_offset(split)
        start = self.comm.rank * rows
        with torch.no_grad():
            self.weight[offset:offset + rows].copy_(tensor_slice[start:start + rows])


class QKVParallelLinear(ColumnParallelLinear):
    """Query, key and value heads sharded by head; needs num_kv_heads % world_size == 0."""


class MergedColumnParallelLinear(ColumnParallelLinear):
    """gate_up_proj: gate and up each sharded, concatenated per rank."""


class RowParallelLinear(Linear):
    """Input columns sharded; partial outputs summed by all-reduce."""

    def __init__(self, base: Linear, comm: _Comm) -> None:
        cols = _divide(base.weight.shape[1], comm.world_size, "input features")
        super().__init__(cols, base.weight.shape[0])
        self.comm = comm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.comm.all_reduce(F.linear(x, self.weight))

    def weight_loader(self, tensor_slice, split: str | None = None) -> None:
        cols = self.weight.shape[1]
        start = self.comm.rank * cols
        with torch.no_grad():
            self.weight.copy_(tensor_slice[:, start:start + cols])


class VocabParallelEmbedding(Embedding):
    """Vocabulary rows sharded; a rank looks up only its ids, zeroes the rest, and the all-reduce fills them in."""

    def __init__(self, base: Embedding, comm: _Comm) -> None:
        rows = _divide(base.weight.shape[0], comm.world_size, "vocab_size")
        super().__init__(rows, base.weight.shape[1])
        self.comm = comm
        self.start, self.stop = comm.rank * rows, (comm.rank + 1) * rows

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_mine = (ids >= self.start) & (ids < self.stop)
        local = torch.where(is_mine, ids - self.start, 0)
        out = F.embedding(local, self.weight) * is_mine.unsqueeze(-1).to(self.weight.dtype)
        return self.comm.all_reduce(out)

    def weight_loader(self, tensor_slice, split: str | None = None) -> None:
        with torch.no_grad():
            self.weight.copy_(tensor_slice[self.start:self.stop])


class ParallelLMHead(ColumnParallelLinear):
    """LM head with vocabulary rows sharded; logits of all ranks are gathered so every rank sees [S, V]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = F.linear(x, self.weight).contiguous()  # [S, V/tp]
        parts = [torch.empty_like(local) for _ in range(self.comm.world_size)]
        dist.all_gather(parts, local, group=self.comm.group)
        return torch.cat(parts, dim=-1)


def check_tp(cfg: ModelConfig, world_size: int) -> None:
    """Raise ConfigError("tp") unless every sharded dimension of `cfg` divides by `world_size`."""
    for what in ("num_heads", "num_kv_heads", "intermediate_size", "vocab_size"):
        _divide(getattr(cfg, what), world_size, what)


def apply_tp(model: LlamaForCausalLM, rank: int, world_size: int, group=None) -> _Comm | None:
    """Shard `model` (weights not yet loaded) for `rank` of `world_size`; returns the layers' comm, None at 1."""
    if world_size == 1:
        return None
    cfg = model.config
    check_tp(cfg, world_size)
    comm = _Comm(rank, world_size, group)
    body = model.model
    body.embed_tokens = VocabParallelEmbedding(body.embed_tokens, comm)
    for layer in body.layers:
        attn, mlp = layer.self_attn, layer.mlp
        attn.qkv_proj = QKVParallelLinear(attn.qkv_proj, comm)
        attn.o_proj = RowParallelLinear(attn.o_proj, comm)
        attn.num_heads //= world_size
        attn.num_kv_heads //= world_size
        mlp.gate_up_proj = MergedColumnParallelLinear(mlp.gate_up_proj, comm)
        mlp.down_proj = RowParallelLinear(mlp.down_proj, comm)
    model.lm_head = ParallelLMHead(model.lm_head, comm)
    if cfg.is_tied_embeddings:
        model.lm_head.weight = body.embed_tokens.weight
    return comm
