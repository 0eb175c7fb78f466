"""CUDA graphs for decode-only steps: one graph per padded batch size, sharing a memory pool and static inputs.

Padded rows decode token 0 at position 0 into the scratch block (kv_cache.NULL_BLOCK) with context length 1, so
they touch no real sequence. A capture failure (e.g. a kernel that syncs with the host) turns graphs off with a
warning instead of failing the engine: decode then runs eagerly.
"""
from __future__ import annotations

import logging

import torch

from gpusleuth.engine.batch import StepInput
from gpusleuth.engine.model import AttnMeta, LlamaForCausalLM

log = logging.getLogger("gpusleuth.engine")


def graph_batch_sizes(max_bs: int) -> list[int]:
    sizes = [b for b in (1, 2, 4, 8) if b < max_bs] + list(range(16, max_bs, 16))
    return sorted(set(sizes + [max_bs]))


class DecodeGraphs:
    def __init__(self, model: LlamaForCausalLM, max_bs: int, max_blocks: int, device: torch.device) -> None:
        self.model, self.max_bs = model, max_bs
        self.ids = torch.zeros(max_bs, dtype=torch.int64, device=device)
        self.positions = torch.zeros(max_bs, dtype=torch.int64, device=device)
        self.slots = torch.zeros(max_bs, dtype=torch.int64, device=device)
        self.tables = torch.zeros(max_bs, max_blocks, dtype=torch.int32, device=device)
        self.context_lens = torch.ones(max_bs, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.sizes: list[int] = []
        self.num_replays = 0

    @classmethod
    def capture(cls, model: LlamaForCausalLM, max_bs: int, max_blocks: int,
                device: torch.device) -> "DecodeGraphs | None":
        graphs = cls(model, max_bs, max_blocks, device)
        try:
            graphs._capture_all()
        except RuntimeError as exc:  # torch raises RuntimeError for capture-invalid operations
            log.warning("CUDA graph capture failed, decode runs eagerly: %s", exc)
            torch.cuda.synchronize(device)
            return None
        return graphs

    def _meta(self, bs: int) -> AttnMeta:
        return AttnMeta(positions=self.positions[:bs], slot_mapping=self.slots[:bs], num_decode=bs,
                        decode_block_tables=self.tables[:bs], decode_context_lens=self.context_lens[:bs])

    def _forward(self, bs: int) -> torch.Tensor:
        # the LM head is inside the graph too: at batch 1 its launches are a visible share of a decode step
        return self.model.compute_logits(self.model(self.ids[:bs], self._meta(bs)))

    @torch.inference_mode()
    def _capture_all(self) -> None:
        pool = None
        for bs in reversed(graph_batch_sizes(self.max_bs)):  # largest first so smaller ones reuse its pool
            self._forward(bs)  # warm-up: Triton compiles outside the capture
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[bs] = self._forward(bs)
            pool = graph.pool() if pool is None else pool
            self.graphs[bs] = graph
        self.sizes = sorted(self.graphs)

    def can_run(self, batch_size: int) -> bool:
        return batch_size <= self.max_bs

    def run(self, inp: StepInput) -> torch.Tensor:
        """Logits [B, V] (float32) of a decode-only step, by replaying the smallest graph that fits."""
        b = inp.num_decode
        bs = next(s for s in self.sizes if s >= b)
        tables = inp.decode_block_tables
        self.ids[:b].copy_(inp.input_ids, non_blocking=True)
        self.positions[:b].copy_(inp.positions, non_blocking=True)
        self.slots[:b].copy_(inp.slot_mapping, non_blocking=True)
        self.context_lens[:b].copy_(inp.decode_context_lens, non_blocking=True)
        self.tables[:b, : tables.shape[1]].copy_(tables, non_blocking=True)
        if bs > b:  # padded rows: scratch block, context 1
            self.ids[b:bs].zero_()
            self.positions[b:bs].zero_()
            self.slots[b:bs].zero_()
            self.context_lens[b:bs].fill_(1)
            self.tables[b:bs].zero_()
        self.graphs[bs].replay()
        self.num_replays += 1
        return self.outputs[bs][:b]
