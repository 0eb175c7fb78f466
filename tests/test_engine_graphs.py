"""The decode-graph bookkeeping (static input buffers, padding rows into the scratch block, batch-size buckets,
output slicing) on the CPU: CUDA graph capture/replay is replaced by re-running the captured forward on the same
static buffers, so everything except the CUDA graph itself is exercised. Real capture is in tests/gpu/.
"""
from __future__ import annotations

import contextlib

import torch

from engine_helpers import make_engine
from gpusleuth.engine import cuda_graphs
from gpusleuth.engine.cuda_graphs import DecodeGraphs, graph_batch_sizes
from gpusleuth.engine.kv_cache import blocks_needed
from gpusleuth.engine.sequence import SamplingParams


class _ReplayByRerun:
    """Stands in for torch.cuda.CUDAGraph: replay() recomputes into the output captured for this size."""

    def __init__(self) -> None:
        self.fn = None
        self.out = None

    def pool(self):
        return None

    def replay(self) -> None:
        self.out.copy_(self.fn())


def _fake_capture(monkeypatch, graphs: DecodeGraphs) -> None:
    monkeypatch.setattr(cuda_graphs.torch.cuda, "CUDAGraph", _ReplayByRerun)
    monkeypatch.setattr(cuda_graphs.torch.cuda, "graph", lambda g, pool=None: contextlib.nullcontext())
    monkeypatch.setattr(cuda_graphs.torch.cuda, "synchronize", lambda *a: None)
    graphs._capture_all()
    for bs, g in graphs.graphs.items():
        g.fn, g.out = (lambda b=bs: graphs._forward(b)), graphs.outputs[bs]


def test_batch_size_buckets():
    assert graph_batch_sizes(1) == [1]
    assert graph_batch_sizes(20) == [1, 2, 4, 8, 16, 20]
    assert graph_batch_sizes(256)[:6] == [1, 2, 4, 8, 16, 32] and graph_batch_sizes(256)[-1] == 256


def test_padded_graph_decode_equals_eager(monkeypatch):
    params = SamplingParams(max_tokens=12, temperature=0.0, is_ignore_eos=True)
    eager = make_engine(init_std=0.1, max_num_seqs=8)
    prompts = [eager.tokenizer.encode(t) for t in ("graph one", "graph two is longer", "three")]
    expected = [r["token_ids"] for r in eager.generate(prompts, params)]

    engine = make_engine(init_std=0.1, max_num_seqs=8)
    runner = engine.runner
    graphs = DecodeGraphs(runner.model, 8, blocks_needed(runner.max_model_len, 16), runner.device)
    with torch.inference_mode():
        _fake_capture(monkeypatch, graphs)
    runner.graphs = graphs
    got = [r["token_ids"] for r in engine.generate(prompts, params)]
    assert graphs.num_replays >= params.max_tokens - 1  # decode steps went through the graph path
    assert got == expected
    # 3 running sequences replay the 4-row bucket: the padded row wrote only into the scratch block
    assert engine.allocator.num_free == engine.allocator.num_usable
