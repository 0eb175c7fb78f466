"""The engine against Hugging Face transformers' LlamaForCausalLM with the same (random, seeded) weights, in fp32
on CPU: greedy tokens identical for 64 tokens on 3 prompts, logits within 1e-4, through the real loader reading
sharded safetensors written by save_pretrained. Also with chunked prefill mixed into decode steps, and with tied
embeddings.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from engine_helpers import PROMPTS, LogitsRecorder, hf_greedy, make_engine, save_hf_checkpoint
from gpusleuth.engine.config import preset
from gpusleuth.engine.sequence import SamplingParams

NUM_TOKENS = 64
LOGITS_TOL = 1e-4


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A sharded tiny checkpoint plus transformers' greedy tokens and logits for the three prompts."""
    path = tmp_path_factory.mktemp("tiny-hf")
    cfg = preset("tiny")
    model = save_hf_checkpoint(cfg, path, seed=1234, max_shard_size="2MB")
    assert len(set(hf_greedy(model, [256, 72, 105], 32)[0])) > 8, "reference output should not collapse"
    engine = make_engine(str(path))
    prompts = [engine.tokenizer.encode(p) for p in PROMPTS]
    refs = [hf_greedy(model, p, NUM_TOKENS) for p in prompts]
    return path, prompts, refs


def _run(engine, prompts, num_tokens):
    rec = LogitsRecorder()
    engine.logits_hook = rec
    params = SamplingParams(max_tokens=num_tokens, temperature=0.0, is_ignore_eos=True)
    ids = [f"gen-0-{i}" for i in range(len(prompts))]
    results = engine.generate(prompts, params)
    return [r["token_ids"] for r in results], [torch.stack(rec.rows[i]) for i in ids]


@pytest.mark.parametrize("budget", [2048, 16], ids=["whole-prefill", "chunked-prefill-16"])
def test_greedy_tokens_and_logits_match_transformers(tiny_checkpoint, budget):
    path, prompts, refs = tiny_checkpoint
    assert len(list(path.glob("*.safetensors"))) > 1, "the checkpoint should be sharded to exercise the index"
    engine = make_engine(str(path), max_num_batched_tokens=budget, max_num_seqs=8)
    tokens, logits = _run(engine, prompts, NUM_TOKENS)
    for i, (ref_tokens, ref_logits) in enumerate(refs):
        assert tokens[i] == ref_tokens, f"prompt {i}: first mismatch at {_first_diff(tokens[i], ref_tokens)}"
        err = (logits[i] - ref_logits).abs().max().item()
        assert err <= LOGITS_TOL, f"prompt {i}: logits max abs error {err:.2e}"
    assert engine.allocator.num_free == engine.allocator.num_usable


def test_chunked_run_really_mixed_prefill_and_decode(tiny_checkpoint):
    """The 16-token budget case above must have had steps with both decode and prefill tokens."""
    path, prompts, _ = tiny_checkpoint
    engine = make_engine(str(path), max_num_batched_tokens=16, max_num_seqs=8)
    mixed = []
    step = engine.scheduler.schedule

    def spy():
        plan = step()
        mixed.append(bool(plan.decode) and bool(plan.prefill))
        return plan

    engine.scheduler.schedule = spy
    _run(engine, prompts, 8)
    assert any(mixed)


def test_tied_embeddings_match_transformers(tmp_path):
    cfg = dataclasses.replace(preset("tiny"), is_tied_embeddings=True, num_layers=2)
    model = save_hf_checkpoint(cfg, tmp_path, seed=7, max_shard_size=None)
    engine = make_engine(str(tmp_path))
    prompt = engine.tokenizer.encode(PROMPTS[1])
    ref_tokens, ref_logits = hf_greedy(model, prompt, 16)
    tokens, logits = _run(engine, [prompt], 16)
    assert tokens[0] == ref_tokens
    assert (logits[0] - ref_logits).abs().max().item() <= LOGITS_TOL


def _first_diff(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
