"""Engine configuration: the model's shape (presets or a Hugging Face config.json) and the engine's runtime knobs.

Each component has one slots dataclass validated in `__post_init__`; errors name the flag/key to fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gpusleuth.probes.config import ConfigError, check_choice, check_range

KERNEL_CHOICES = ("auto", "fused", "torch")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


@dataclass(slots=True)
class ModelConfig:
    """Shape of a Llama-family decoder (Llama 2/3, Mistral): GQA, RoPE (optionally llama3-scaled), RMSNorm, SwiGLU."""

    name: str = "tiny"
    vocab_size: int = 512
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 4
    head_dim: int = 0  # 0 = hidden_size // num_heads
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "llama3", "factor": ..., ...} as in config.json
    max_position_embeddings: int = 2048
    is_tied_embeddings: bool = False
    bos_token_id: int | None = 256
    eos_token_id: int | list[int] | None = 257

    def __post_init__(self) -> None:
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                    "max_position_embeddings"):
            check_range(key, getattr(self, key), 1, None)
        if self.head_dim == 0:
            if self.hidden_size % self.num_heads:
                raise ConfigError("head_dim", "hidden_size is not divisible by num_heads; set head_dim explicitly")
            self.head_dim = self.hidden_size // self.num_heads
        if self.head_dim % 2:
            raise ConfigError("head_dim", f"{self.head_dim} must be even for rotary embeddings")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("num_kv_heads", f"{self.num_kv_heads} must divide num_heads={self.num_heads} (GQA)")
        check_range("rms_norm_eps", self.rms_norm_eps, 0.0, 1.0)
        if self.rope_scaling is not None:
            rope_type = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if rope_type not in ("llama3", "default"):
                raise ConfigError("rope_scaling", f"rope_type {rope_type!r} is not supported (llama3 or default)")
            if rope_type == "default":
                self.rope_scaling = None

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        return tuple(self.eos_token_id) if isinstance(self.eos_token_id, list) else (self.eos_token_id,)

    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        h, d = self.hidden_size, self.head_dim
        attn = h * (self.num_heads + 2 * self.num_kv_heads) * d + self.num_heads * d * h
        mlp = 3 * h * self.intermediate_size
        embed = self.vocab_size * h * (1 if self.is_tied_embeddings else 2)
        return self.num_layers * (attn + mlp + 2 * h) + embed + h

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> "ModelConfig":
        """Read a Hugging Face config.json (LlamaForCausalLM / MistralForCausalLM layout)."""
        cfg_path = Path(path) / "config.json"
        if not cfg_path.is_file():
            raise ConfigError("model_dir", f"{path} has no config.json (expected a Hugging Face model directory)")
        data = json.loads(cfg_path.read_text())
        model_type = data.get("model_type", "llama")
        if model_type not in ("llama", "mistral"):
            raise ConfigError("model_dir", f"model_type {model_type!r} is not supported (llama or mistral)")
        num_heads = data["num_attention_heads"]
        return cls(
            name=Path(path).name, vocab_size=data["vocab_size"], hidden_size=data["hidden_size"],
            intermediate_size=data["intermediate_size"], num_layers=data["num_hidden_layers"], num_heads=num_heads,
            num_kv_heads=data.get("num_key_value_heads") or num_heads,
            head_dim=data.get("head_dim") or data["hidden_size"] // num_heads,
            rms_norm_eps=data.get("rms_norm_eps", 1e-5), rope_theta=_rope_theta(data),
            rope_scaling=_rope_scaling(data), max_position_embeddings=data.get("max_position_embeddings", 4096),
            is_tied_embeddings=bool(data.get("tie_word_embeddings", False)),
            bos_token_id=data.get("bos_token_id"), eos_token_id=data.get("eos_token_id"))


def _rope_theta(data: dict[str, Any]) -> float:
    params = data.get("rope_parameters") or {}
    return float(data.get("rope_theta") or params.get("rope_theta") or 10000.0)


def _rope_scaling(data: dict[str, Any]) -> dict[str, Any] | None:
    # transformers 4.x writes "rope_scaling"; 5.x writes "rope_parameters" (which also carries rope_theta).
    scaling = data.get("rope_scaling") or data.get("rope_parameters")
    if not scaling or scaling.get("rope_type", scaling.get("type")) in (None, "default"):
        return None
    return {k: v for k, v in scaling.items() if k != "rope_theta"}


_LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}

PRESETS: dict[str, ModelConfig] = {
    # A few M parameters: CPU tests. llama3 rope scaling with a short original context so the scaled path is used.
    "tiny": ModelConfig(name="tiny", rope_scaling={**_LLAMA3_SCALING, "factor": 4.0,
                                                   "original_max_position_embeddings": 256}),
    "llama3-1b": ModelConfig(
        name="llama3-1b", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
        num_kv_heads=8, head_dim=64, rope_theta=500000.0, rope_scaling={**_LLAMA3_SCALING, "factor": 32.0},
        max_position_embeddings=131072, is_tied_embeddings=True, bos_token_id=128000, eos_token_id=128001),
    "llama3-8b": ModelConfig(
        name="llama3-8b", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
        num_kv_heads=8, rope_theta=500000.0, rope_scaling=dict(_LLAMA3_SCALING), max_position_embeddings=131072,
        bos_token_id=128000, eos_token_id=128001),
    "llama2-13b": ModelConfig(
        name="llama2-13b", vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40,
        num_kv_heads=40, rope_theta=10000.0, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2),
    "llama3-70b": ModelConfig(
        name="llama3-70b", vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64,
        num_kv_heads=8, rope_theta=500000.0, rope_scaling=dict(_LLAMA3_SCALING), max_position_embeddings=131072,
        bos_token_id=128000, eos_token_id=128001),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A copy of preset `name` with `overrides` applied (e.g. num_layers=2 for a layer-subset measurement)."""
    if name not in PRESETS:
        raise ConfigError("preset", f"{name!r} is not one of {', '.join(PRESETS)}")
    base = PRESETS[name]
    scaling = dict(base.rope_scaling) if base.rope_scaling else None
    return replace(base, rope_scaling=scaling, **overrides)


@dataclass(slots=True)
class EngineConfig:
    """Runtime knobs of one engine (all ranks share it)."""

    device: str = "auto"  # auto = cuda when available, else cpu
    dtype: str = "auto"  # auto = bfloat16 on cuda, float32 on cpu
    kernels: str = "auto"  # auto = fused Triton kernels on cuda, torch references elsewhere
    tp: int = 1
    seed: int = 0
    init_std: float = 0.02  # std of random weights (transformers' initializer_range); larger = peakier logits
    block_size: int = 16
    num_cpu_blocks: int = 512  # KV blocks on CPU (no free-memory probe there)
    num_cpu_threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default (1 avoids OpenMP spinning on
    # small, shared machines: a tiny-model decode step went from ~280 ms to ~4 ms on a loaded 2-core CI box)
    kv_cache_fraction: float = 0.9  # of the GPU memory still free after weights and a profiling pass
    num_gpu_blocks: int = 0  # >0 overrides the free-memory sizing (tests, reproducible runs)
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048  # token budget of one step (chunked prefill + decode)
    max_model_len: int = 8192  # capped by the model's max_position_embeddings
    is_cuda_graphs: bool = True  # decode-only steps replay captured graphs on CUDA
    max_graph_batch_size: int = 256
    dist_port: int = 0  # 0 = pick a free loopback port for the spawned ranks

    def __post_init__(self) -> None:
        check_choice("kernels", self.kernels, KERNEL_CHOICES)
        check_choice("dtype", self.dtype, DTYPE_CHOICES)
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError("device", f"{self.device!r} is not auto, cpu or cuda")
        check_range("tp", self.tp, 1, 64)
        check_range("init_std", self.init_std, 0.0, 10.0)
        check_choice("block_size", str(self.block_size), ["8", "16", "32", "64", "128"])
        check_range("num_cpu_blocks", self.num_cpu_blocks, 1, None)
        check_range("num_cpu_threads", self.num_cpu_threads, 0, 1024)
        check_range("kv_cache_fraction", self.kv_cache_fraction, 0.01, 0.99)
        check_range("num_gpu_blocks", self.num_gpu_blocks, 0, None)
        check_range("max_num_seqs", self.max_num_seqs, 1, 4096)
        check_range("max_num_batched_tokens", self.max_num_batched_tokens, 1, 1 << 20)
        check_range("max_model_len", self.max_model_len, 2, None)
        check_range("max_graph_batch_size", self.max_graph_batch_size, 1, 4096)
        check_range("dist_port", self.dist_port, 0, 65535)
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ConfigError("max_num_batched_tokens",
                              f"must be >= max_num_seqs ({self.max_num_seqs}) so every running request can decode")


@dataclass(slots=True)
class ServerConfig:
    """The OpenAI-compatible HTTP front end (rank 0 only)."""

    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str = ""  # empty = the preset / model directory name
    max_waiting: int = 1024  # requests queued beyond this get 429 + Retry-After
    retry_after_s: int = 1
    max_body_bytes: int = 16 * 2**20  # larger bodies get 413
    header_timeout_s: float = 10.0  # request line + headers must arrive within this (else 408, closed)
    read_timeout_s: float = 30.0  # the body must arrive within this after the headers (else 408)
    keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this
    max_connections: int = 4096  # open connections beyond this get 503
    fatal_exit_grace_s: float = 1.0  # after the engine failed: answer 503 this long, then exit non-zero

    def __post_init__(self) -> None:
        check_range("port", self.port, 0, 65535)
        check_range("max_waiting", self.max_waiting, 1, None)
        check_range("retry_after_s", self.retry_after_s, 1, 3600)
        check_range("max_body_bytes", self.max_body_bytes, 1024, None)
        for key in ("header_timeout_s", "read_timeout_s", "keep_alive_s"):
            check_range(key, getattr(self, key), 0.1, 3600.0)
        check_range("max_connections", self.max_connections, 1, None)
        check_range("fatal_exit_grace_s", self.fatal_exit_grace_s, 0.0, 600.0)


@dataclass(slots=True)
class ModelSource:
    """Where weights come from: a preset with random weights, or a Hugging Face directory."""

    preset: str = "tiny"
    model_dir: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields (e.g. num_layers for benches)

    def __post_init__(self) -> None:
        if not self.model_dir and self.preset not in PRESETS:
            raise ConfigError("preset", f"{self.preset!r} is not one of {', '.join(PRESETS)}")
        if self.model_dir and not Path(self.model_dir).is_dir():
            raise ConfigError("model_dir", f"{self.model_dir} is not a directory")

    def model_config(self) -> ModelConfig:
        if self.model_dir:
            cfg = ModelConfig.from_hf_dir(self.model_dir)
            return replace(cfg, **self.overrides) if self.overrides else cfg
        return preset(self.preset, **self.overrides)
