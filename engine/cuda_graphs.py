"""CUDA graphs for decode-only steps: one graph per padded batch size, sharing a memory pool and static inputs.

Padded rows decode token 0 at position 0 into the scratch block (kv_cache.NULL_BLOCK) with context length 1, so
they touch no real sequence. A capture failure (e.g. a kernel that syncs with the host) turns graphs off with a
warning instead of failing the engine: decode then runs eagerly.
"""
from __future__ import annotations

import logging
import os

import torch

from gpusleuth.engine.batch import StepInput
from gpusleuth.engine.model import AttnMeta, LlamaForCausalLM

log = logging.getLogger("gpusleuth.engine")


# Layer boundaries between a decode step's graphs (1 layer, then 3, then the rest); GPUSLEUTH_GRAPH_CHUNKS="" or
# "none" captures one graph per batch size (for A/B runs), "1,4,12" other cuts.
CHUNK_CUTS = (1, 4)


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
        self.graphs: dict[int, list[torch.cuda.CUDAGraph]] = {}  # per batch size: its chunks, in order
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

    def _chunks(self) -> list[tuple[int, int]]:
        """Layer ranges captured as separate graphs: a short first one so the GPU starts while the host is still
        launching the long rest (launching a graph costs host time roughly per node: hundreds of nodes per step)."""
        n = len(self.model.model.layers)
        env = os.environ.get("GPUSLEUTH_GRAPH_CHUNKS")
        wanted = CHUNK_CUTS if env is None else [int(c) for c in env.split(",") if c.strip().isdigit()]
        cuts = sorted({c for c in wanted if 0 < c < n} | {n})
        return list(zip([0] + cuts[:-1], cuts))

    def _run_chunk(self, bs: int, lo: int, hi: int, h, residual, meta: AttnMeta):
        body = self.model.model
        if lo == 0:
            h, residual = body.embed_tokens(self.ids[:bs]), None
        for layer in body.layers[lo:hi]:
            h, residual = layer(h, residual, meta)
        if hi < len(body.layers):
            return h, residual
        h, _ = body.norm(h, residual)
        return self.model.compute_logits(h), None

    @torch.inference_mode()
    def _capture_all(self) -> None:
        pool = None
        for bs in reversed(graph_batch_sizes(self.max_bs)):  # largest first so smaller ones reuse its pool
            self._forward(bs)  # warm-up: Triton compiles outside the capture
            torch.cuda.synchronize()
            meta, h, residual, parts = self._meta(bs), None, None, []
            for lo, hi in self._chunks():
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    h, residual = self._run_chunk(bs, lo, hi, h, residual, meta)
                pool = graph.pool() if pool is None else pool
                parts.append(graph)
            self.outputs[bs], self.graphs[bs] = h, parts
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
        for part in self.graphs[bs]:
            part.replay()
        self.num_replays += 1
        return self.outputs[bs][:b]
