"""Weights into a (possibly tensor-parallel) model from Hugging Face-layout tensors.

A *source* yields (hf_name, sliceable) pairs; each target layer's `weight_loader` slices out only what this rank
holds, so with safetensors (`get_slice`, memory-mapped) a rank reads only its shard from disk. Random weights are a
source too: each tensor is generated whole on the device from a per-name seed and then sliced the same way, so
every tensor-parallel size sees the same model.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from gpusleuth.probes.config import ConfigError
from gpusleuth.engine.config import ModelConfig

_MERGES = (("q_proj", "qkv_proj", "q"), ("k_proj", "qkv_proj", "k"), ("v_proj", "qkv_proj", "v"),
           ("gate_proj", "gate_up_proj", "gate"), ("up_proj", "gate_up_proj", "up"))


def hf_tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Hugging Face LlamaForCausalLM checkpoint of `cfg` holds, with its full shape."""
    h, d, i = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg.vocab_size, h), "model.norm.weight": (h,)}
    for n in range(cfg.num_layers):
        p = f"model.layers.{n}."
        hq, hk = cfg.num_heads * d, cfg.num_kv_heads * d
        shapes.update({
            p + "self_attn.q_proj.weight": (hq, h), p + "self_attn.k_proj.weight": (hk, h),
            p + "self_attn.v_proj.weight": (hk, h), p + "self_attn.o_proj.weight": (h, hq),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i),
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)})
    if not cfg.is_tied_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, h)
    return shapes


def target_of(hf_name: str) -> tuple[str, str | None]:
    """(our module path, split) for a checkpoint tensor name, e.g. q_proj -> (…qkv_proj, "q")."""
    module = hf_name.removesuffix(".weight")
    for src, dst, split in _MERGES:
        if module.endswith("." + src):
            return module[: -len(src)] + dst, split
    return module, None


class _RandomTensor:
    """A checkpoint tensor generated on first slicing (normal(0, std); norms are ones)."""

    def __init__(self, name: str, shape: tuple[int, ...], seed: int, std: float, device: torch.device,
                 dtype: torch.dtype):
        self.name, self.shape, self.seed, self.std, self.device, self.dtype = name, shape, seed, std, device, dtype

    def get_shape(self) -> list[int]:
        return list(self.shape)

    def __getitem__(self, index) -> torch.Tensor:
        if len(self.shape) == 1:
            return torch.ones(self.shape, device=self.device, dtype=self.dtype)[index]
        gen = torch.Generator(device=self.device)
        gen.manual_seed((self.seed * 1_000_003 + zlib.crc32(self.name.encode())) % (1 << 63))
        full = torch.empty(self.shape, device=self.device, dtype=self.dtype)
        full.normal_(0.0, self.std, generator=gen)
        return full[index]


def random_source(cfg: ModelConfig, seed: int, device: torch.device, dtype: torch.dtype,
                  std: float = 0.02) -> Iterator[tuple[str, object]]:
    """Random weights generated on `device` (never via a CPU model); the same for every TP size."""
    for name, shape in hf_tensor_shapes(cfg).items():
        yield name, _RandomTensor(name, shape, seed, std, device, dtype)


def safetensors_source(model_dir: str | Path) -> Iterator[tuple[str, object]]:
    """Tensors of every *.safetensors file in `model_dir` (the index's files when sharded), as lazy slices."""
    from safetensors import safe_open

    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if not files:
        raise ConfigError("model_dir", f"{model_dir} has no *.safetensors files (only safetensors are supported)")
    for fname in files:
        with safe_open(str(model_dir / fname), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_slice(name)


def state_dict_source(state: dict[str, torch.Tensor]) -> Iterator[tuple[str, object]]:
    """An in-memory checkpoint (e.g. a transformers model's state_dict()) as a source."""
    yield from state.items()


def load_weights(model: nn.Module, source: Iterator[tuple[str, object]]) -> None:
    """Fill every weight of `model` from `source`; raise ValueError naming tensors that are missing."""
    cfg: ModelConfig = model.config
    modules = dict(model.named_modules())
    expected = {target_of(n) for n in hf_tensor_shapes(cfg)}
    loaded: set[tuple[str, str | None]] = set()
    for name, tensor_slice in source:
        if "rotary_emb" in name or (cfg.is_tied_embeddings and name == "lm_head.weight"):
            continue  # recomputed / shared with the embedding
        target = target_of(name)
        if target not in expected:
            raise ValueError(f"checkpoint tensor {name!r} does not belong to a {cfg.name} Llama model")
        modules[target[0]].weight_loader(tensor_slice, target[1])
        loaded.add(target)
    missing = sorted(f"{m}{'[' + s + ']' if s else ''}" for m, s in expected - loaded)
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
