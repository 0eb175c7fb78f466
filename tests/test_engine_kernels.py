"""engine/ops.py dispatch: the fused Triton kernels (run by the Triton CPU interpreter here, TRITON_INTERPRET=1 as
tests/conftest.py sets on hosts without a GPU) give the torch references' greedy tokens through the whole engine,
covering fresh prefill, chunked (paged) prefill mixed with decode, and paged decode.
"""
from __future__ import annotations

import pytest
import torch

from engine_helpers import LogitsRecorder, make_engine
from gpusleuth.probes.config import ConfigError
from gpusleuth.engine.ops import select_ops
from gpusleuth.engine.sequence import SamplingParams
from gpusleuth.kernels import is_triton_available


def _run(kernels: str):
    engine = make_engine(kernels=kernels, max_num_batched_tokens=16, max_num_seqs=4, init_std=0.1)
    rec = LogitsRecorder()
    engine.logits_hook = rec
    prompts = [engine.tokenizer.encode("hi there"), engine.tokenizer.encode("a somewhat longer prompt")]
    out = engine.generate(prompts, SamplingParams(max_tokens=6, temperature=0.0, is_ignore_eos=True))
    return engine, [o["token_ids"] for o in out], rec.rows


@pytest.mark.skipif(not is_triton_available("cpu"), reason="needs triton with TRITON_INTERPRET=1 (no GPU here)")
def test_fused_kernels_match_torch_references_through_the_engine():
    ref_engine, ref_tokens, ref_rows = _run("torch")
    fused_engine, tokens, rows = _run("fused")
    assert ref_engine.runner.ops.name == "torch" and fused_engine.runner.ops.name == "fused"
    assert tokens == ref_tokens
    err = max((torch.stack(rows[k]) - torch.stack(ref_rows[k])).abs().max().item() for k in ref_rows)
    assert err < 1e-4


def test_auto_picks_references_on_cpu_and_fused_is_refused_without_triton(monkeypatch):
    assert not select_ops("auto", torch.device("cpu")).is_fused
    monkeypatch.setattr("gpusleuth.kernels.is_triton_available", lambda device: False)
    with pytest.raises(ConfigError) as exc:
        select_ops("fused", torch.device("cpu"))
    assert exc.value.key == "kernels"
