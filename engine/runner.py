"""One rank's model: build (on meta, then sharded, then materialised), load weights, size and hold the KV cache,
execute a step's inputs, replay CUDA graphs for decode-only steps."""
from __future__ import annotations

import logging

import torch

from gpusleuth.engine.batch import StepInput
from gpusleuth.engine.config import EngineConfig, ModelConfig
from gpusleuth.engine.cuda_graphs import DecodeGraphs
from gpusleuth.engine.faults import RankFaults
from gpusleuth.engine.kv_cache import allocate_caches, blocks_needed, num_blocks_for_memory
from gpusleuth.engine.loader import load_weights, random_source, safetensors_source
from gpusleuth.engine.model import LlamaForCausalLM
from gpusleuth.engine.ops import select_ops
from gpusleuth.engine.symm_allreduce import maybe_symmetric
from gpusleuth.engine.tp import apply_tp

log = logging.getLogger("gpusleuth.engine")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(engine_cfg: EngineConfig, local_rank: int = 0) -> torch.device:
    if engine_cfg.device == "cpu" or (engine_cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if engine_cfg.device.startswith("cuda:") and engine_cfg.tp == 1:
        return torch.device(engine_cfg.device)
    return torch.device("cuda", local_rank)


def resolve_dtype(engine_cfg: EngineConfig, device: torch.device) -> torch.dtype:
    if engine_cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[engine_cfg.dtype]


def build_model(cfg: ModelConfig, engine_cfg: EngineConfig, device: torch.device, dtype: torch.dtype,
                rank: int = 0, world_size: int = 1, group=None):
    """(model with this rank's shard allocated but unloaded, tp comm or None)."""
    ops = select_ops(engine_cfg.kernels, device)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg, ops)
        comm = apply_tp(model, rank, world_size, group)  # shard before materialising: never hold the full model
    model = model.to(dtype=dtype).to_empty(device=device)
    if cfg.is_tied_embeddings:  # to_empty re-creates parameters, which unties them
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval(), comm


class ModelRunner:
    def __init__(self, cfg: ModelConfig, engine_cfg: EngineConfig, device: torch.device, rank: int = 0,
                 world_size: int = 1, group=None, model_dir: str = "", source=None) -> None:
        """`source` (loader.*_source) overrides where weights come from: default model_dir, else random."""
        self.cfg, self.engine_cfg, self.device, self.rank = cfg, engine_cfg, device, rank
        if device.type == "cpu" and engine_cfg.num_cpu_threads:
            torch.set_num_threads(engine_cfg.num_cpu_threads)
        self.dtype = resolve_dtype(engine_cfg, device)
        self.max_model_len = min(engine_cfg.max_model_len, cfg.max_position_embeddings)
        self.model, self.comm = build_model(cfg, engine_cfg, device, self.dtype, rank, world_size, group)
        if source is None:
            source = (safetensors_source(model_dir) if model_dir
                      else random_source(cfg, engine_cfg.seed, device, self.dtype, engine_cfg.init_std))
        with torch.inference_mode():
            load_weights(self.model, source)
        self.ops = self.model.model.layers[0].self_attn.ops
        self.faults = RankFaults(rank, device)
        if self.comm is not None:
            self.comm.pre_all_reduce = self.faults.pre_all_reduce
            self.comm.small = maybe_symmetric(group, device, self.dtype)
        cos_sin = self.ops.build_rope_cache(self.max_model_len, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling,
                                           device=device, dtype=torch.float32)
        for attn in self.model.attention_layers():
            attn.cos_sin = cos_sin
        self.num_blocks = 0
        self.graphs: DecodeGraphs | None = None

    @property
    def num_local_kv_heads(self) -> int:
        return self.model.attention_layers()[0].num_kv_heads

    def suggest_num_blocks(self) -> int:
        """KV blocks this rank can hold: the configured count on CPU, else from free memory after a profile."""
        ecfg = self.engine_cfg
        if self.device.type != "cuda":
            return ecfg.num_cpu_blocks
        if ecfg.num_gpu_blocks:
            return ecfg.num_gpu_blocks
        peak = self._profile_activation_bytes()
        free, _total = torch.cuda.mem_get_info(self.device)
        tp = self.cfg.num_kv_heads // self.num_local_kv_heads
        num = num_blocks_for_memory(max(free - peak, 0), ecfg.kv_cache_fraction, self.cfg, tp,
                                    ecfg.block_size, self.dtype)
        log.info("rank %d: %.1f GiB free, %.2f GiB activation peak -> %d KV blocks", self.rank, free / 2**30,
                 peak / 2**30, num)
        return num

    def init_kv_cache(self, num_blocks: int) -> None:
        """Allocate the cache (same block count on every rank) and capture decode graphs where enabled."""
        self.num_blocks = num_blocks
        self._attach(allocate_caches(self.cfg.num_layers, num_blocks, self.engine_cfg.block_size,
                                     self.num_local_kv_heads, self.cfg.head_dim, self.dtype, self.device))
        if self.device.type == "cuda" and self.engine_cfg.is_cuda_graphs:
            max_blocks = blocks_needed(self.max_model_len, self.engine_cfg.block_size)
            max_bs = min(self.engine_cfg.max_graph_batch_size, self.engine_cfg.max_num_seqs)
            self.graphs = DecodeGraphs.capture(self.model, max_bs, max_blocks, self.device)

    def _attach(self, caches) -> None:
        for attn, (k, v) in zip(self.model.attention_layers(), caches):
            attn.k_cache, attn.v_cache = k, v

    @torch.inference_mode()
    def execute(self, inp: StepInput) -> torch.Tensor | None:
        """Run one step; logits [S, V] float32 of the sampled rows (every rank: the LM head all-gathers)."""
        if inp.faults is not None:
            self.faults.update(inp.faults)
        self.faults.begin_step()
        if (self.graphs is not None and inp.is_decode_only and not self.faults.is_delaying
                and self.graphs.can_run(inp.num_decode)):
            return self.graphs.run(inp)  # every decode row is sampled
        hidden = self.model(inp.input_ids.to(self.device, non_blocking=True), inp.to_meta(self.device))
        if inp.logits_indices.numel() == 0:
            return None
        if not inp.is_decode_only:
            hidden = hidden[inp.logits_indices.to(self.device, non_blocking=True)]
        return self.model.compute_logits(hidden)

    def _profile_activation_bytes(self) -> int:
        """Peak extra memory of the largest step (a fresh prefill of max_num_batched_tokens)."""
        ecfg = self.engine_cfg
        seq_len = min(ecfg.max_num_batched_tokens, self.max_model_len)
        num_seqs = -(-ecfg.max_num_batched_tokens // seq_len)
        per_seq = blocks_needed(seq_len, ecfg.block_size)
        self._attach(allocate_caches(self.cfg.num_layers, num_seqs * per_seq + 1, ecfg.block_size,
                                     self.num_local_kv_heads, self.cfg.head_dim, self.dtype, self.device))
        inp = profile_input(num_seqs, seq_len, per_seq, ecfg.block_size, min(ecfg.max_num_seqs, num_seqs * seq_len))
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        self.execute(inp)
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - base
        self._attach([(None, None)] * self.cfg.num_layers)
        torch.cuda.empty_cache()
        return peak


def profile_input(num_seqs: int, seq_len: int, blocks_per_seq: int, block_size: int, num_rows: int) -> StepInput:
    """A fresh prefill of num_seqs x seq_len tokens (block ids from 1), sampling `num_rows` rows."""
    t = num_seqs * seq_len
    pos = torch.arange(seq_len).repeat(num_seqs)
    seq_idx = torch.arange(num_seqs).repeat_interleave(seq_len)
    tables = 1 + torch.arange(num_seqs * blocks_per_seq, dtype=torch.int32).view(num_seqs, blocks_per_seq)
    slots = tables[seq_idx, pos // block_size].long() * block_size + pos % block_size
    return StepInput(
        input_ids=torch.zeros(t, dtype=torch.int64), positions=pos, slot_mapping=slots, num_decode=0,
        decode_block_tables=torch.zeros(0, 1, dtype=torch.int32),
        decode_context_lens=torch.zeros(0, dtype=torch.int32), prefill_block_tables=tables,
        prefill_cu_seqlens=torch.arange(0, t + 1, seq_len, dtype=torch.int32),
        prefill_context_lens=torch.full((num_seqs,), seq_len, dtype=torch.int32), is_prefill_fresh=True,
        prefill_max_len=seq_len,
        logits_indices=torch.arange(t - num_rows, t, dtype=torch.int64))
