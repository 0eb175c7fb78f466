"""Single-device Llama-family decoder over a paged KV cache (no torch.distributed here: see tp.py).

A step's tokens are packed into one [T] row: first `num_decode` decode tokens (one per sequence), then the
prefill chunks of the prefilling sequences back to back. Linear layers run once over all T tokens; attention
splits into a paged decode call and a (paged) prefill call.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gpusleuth.engine.config import ModelConfig
from gpusleuth.engine.ops import Ops, write_kv


@dataclass(slots=True)
class AttnMeta:
    """Where each token of a step sits in the paged cache (all tensors on the model's device)."""

    positions: torch.Tensor  # [T] int64
    slot_mapping: torch.Tensor  # [T] int64
    num_decode: int  # decode tokens lead the batch
    decode_block_tables: torch.Tensor | None = None  # [Bd, M] int32
    decode_context_lens: torch.Tensor | None = None  # [Bd] int32
    prefill_block_tables: torch.Tensor | None = None  # [Bp, M] int32
    prefill_cu_seqlens: torch.Tensor | None = None  # [Bp+1] int32
    prefill_context_lens: torch.Tensor | None = None  # [Bp] int32
    is_prefill_fresh: bool = False  # no prefill chunk has earlier cached tokens: attend over k/v directly
    prefill_max_len: int | None = None  # longest prefill chunk (saves the kernels a device sync)


class Linear(nn.Module):
    """y = x W^T without bias. `splits` names row blocks of a merged weight (q/k/v, gate/up) that checkpoints
    store as separate tensors, with each block's row count in this module."""

    def __init__(self, in_features: int, out_features: int, splits: dict[str, int] | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.splits = splits or {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def split_offset(self, split: str | None) -> tuple[int, int]:
        """(first row, row count) of `split` in this module's weight."""
        if split is None:
            return 0, self.weight.shape[0]
        offset = 0
        for name, rows in self.splits.items():
            if name == split:
                return offset, rows
            offset += rows
        raise KeyError(f"{split!r} is not a split of this layer ({list(self.splits)})")

    def weight_loader(self, tensor_slice, split: str | None = None) -> None:
        """Copy a checkpoint tensor (anything sliceable like safetensors' PySafeSlice) into this weight."""
        offset, rows = self.split_offset(split)
        with torch.no_grad():
            self.weight[offset:offset + rows].copy_(tensor_slice[:])


class Embedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)

    def weight_loader(self, tensor_slice, split: str | None = None) -> None:
        with torch.no_grad():
            self.weight.copy_(tensor_slice[:])


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, ops: Ops) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)
        self.eps, self.ops = eps, ops

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self.ops.rms_norm(x, self.weight, self.eps), x
        return self.ops.add_rms_norm(x, residual, self.weight, self.eps)

    def weight_loader(self, tensor_slice, split: str | None = None) -> None:
        with torch.no_grad():
            self.weight.copy_(tensor_slice[:])


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: Ops) -> None:
        super().__init__()
        d = cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, d
        self.scale = d ** -0.5
        self.qkv_proj = Linear(cfg.hidden_size, (cfg.num_heads + 2 * cfg.num_kv_heads) * d,
                               {"q": cfg.num_heads * d, "k": cfg.num_kv_heads * d, "v": cfg.num_kv_heads * d})
        self.o_proj = Linear(cfg.num_heads * d, cfg.hidden_size)
        self.ops = ops
        # Set by the runner once the cache is allocated: [num_blocks, block_size, Hk_local, D] each.
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None
        self.cos_sin: torch.Tensor | None = None  # shared [max_pos, D] rope cache

    def forward(self, x: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        t, d = x.shape[0], self.head_dim
        hq, hk = self.num_heads, self.num_kv_heads  # local to this rank after tp.apply_tp
        qkv = self.qkv_proj(x)  # [T, (hq + 2 hk) d]
        q, k, v = qkv.split([hq * d, hk * d, hk * d], dim=-1)
        q, k, v = q.reshape(t, hq, d), k.reshape(t, hk, d), v.reshape(t, hk, d)
        self.ops.rope_(q, k, meta.positions, self.cos_sin)
        write_kv(self.k_cache, self.v_cache, k, v, meta.slot_mapping)
        out = self._attend(q, k, v, meta)  # [T, hq, d]
        return self.o_proj(out.reshape(t, hq * d))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        nd = meta.num_decode
        parts = []
        if nd:
            parts.append(self.ops.paged_decode_attention(
                q[:nd], self.k_cache, self.v_cache, meta.decode_block_tables, meta.decode_context_lens, self.scale))
        if q.shape[0] > nd:
            qp = q[nd:]
            if meta.is_prefill_fresh:
                parts.append(self.ops.prefill_attention(qp, k[nd:], v[nd:], meta.prefill_cu_seqlens, self.scale,
                                                        max_seqlen=meta.prefill_max_len))
            else:
                parts.append(self.ops.paged_prefill_attention(
                    qp, self.k_cache, self.v_cache, meta.prefill_block_tables, meta.prefill_cu_seqlens,
                    meta.prefill_context_lens, self.scale, max_seqlen=meta.prefill_max_len))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: Ops) -> None:
        super().__init__()
        i = cfg.intermediate_size
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * i, {"gate": i, "up": i})
        self.down_proj = Linear(i, cfg.hidden_size)
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.ops.swiglu(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: Ops) -> None:
        super().__init__()
        self.self_attn = Attention(cfg, ops)
        self.mlp = MLP(cfg, ops)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, meta: AttnMeta):
        h, residual = self.input_layernorm(x, residual)
        h = self.self_attn(h, meta)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class LlamaBody(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: Ops) -> None:
        super().__init__()
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg, ops) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)

    def forward(self, ids: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        h, residual = self.embed_tokens(ids), None
        for layer in self.layers:
            h, residual = layer(h, residual, meta)
        h, _ = self.norm(h, residual)
        return h


class LlamaForCausalLM(nn.Module):
    """Module names mirror Hugging Face's so checkpoints map with only the q/k/v and gate/up merges."""

    def __init__(self, cfg: ModelConfig, ops: Ops) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaBody(cfg, ops)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size)
        if cfg.is_tied_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn for layer in self.model.layers]

    def forward(self, ids: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        """Hidden states [T, H] of every token (logits are computed only for sampled rows: see compute_logits)."""
        return self.model(ids, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [S, V] in float32 for the given hidden rows."""
        return self.lm_head(hidden).float()
