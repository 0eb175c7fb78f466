"""Scheduler, allocator, sampler and output handling on the tiny CPU engine: preemption by recompute gives the
same greedy tokens as an unpressured run, chunked prefill respects the budget, seeds reproduce, stop conditions.
"""
from __future__ import annotations

import pytest
import torch

from engine_helpers import make_engine
from gpusleuth.engine.kv_cache import BlockAllocator
from gpusleuth.engine.sampler import make_generator, sample
from gpusleuth.engine.scheduler import Scheduler
from gpusleuth.engine.sequence import SamplingError, SamplingParams, Sequence
from gpusleuth.engine.tokenizer import ByteTokenizer, IncrementalDetokenizer

GREEDY = SamplingParams(max_tokens=40, temperature=0.0, is_ignore_eos=True)


def _prompts(engine, n=4):
    return [engine.tokenizer.encode(f"prompt {i} " + "abc" * (5 + 3 * i)) for i in range(n)]


def test_preemption_by_recompute_keeps_greedy_tokens():
    roomy = make_engine(num_cpu_blocks=256)
    expected = [r["token_ids"] for r in roomy.generate(_prompts(roomy), GREEDY)]
    # 4 requests of ~30-50 prompt + 40 output tokens need ~24 blocks of 16 together; give them 12
    tight = make_engine(num_cpu_blocks=13)
    got = [r["token_ids"] for r in tight.generate(_prompts(tight), GREEDY)]
    assert tight.scheduler.num_preemptions > 0, "the tight cache should have forced preemption"
    assert got == expected
    assert tight.allocator.num_free == tight.allocator.num_usable


def test_chunked_prefill_respects_token_budget():
    engine = make_engine(max_num_batched_tokens=24, max_num_seqs=4)
    sizes = []
    schedule = engine.scheduler.schedule

    def spy():
        plan = schedule()
        sizes.append(plan.num_tokens)
        return plan

    engine.scheduler.schedule = spy
    engine.generate([engine.tokenizer.encode("z" * 100)], SamplingParams(max_tokens=3, temperature=0.0))
    assert max(sizes) <= 24
    assert sizes[:5] == [24, 24, 24, 24, 5]  # 101 prompt tokens in chunks, then decode steps of 1


def test_allocator_counts_and_usage():
    alloc = BlockAllocator(num_blocks=5, block_size=16)
    assert alloc.num_usable == 4 and alloc.usage == 0.0
    blocks = alloc.allocate(3)
    assert 0 not in blocks and len(set(blocks)) == 3 and alloc.usage == 0.75
    assert not alloc.can_allocate(2)
    alloc.free(blocks)
    assert alloc.num_free == 4


def test_waiting_head_is_not_overtaken():
    alloc = BlockAllocator(num_blocks=4, block_size=4)  # 3 usable blocks = 12 tokens
    sched = Scheduler(alloc, max_num_seqs=8, max_num_batched_tokens=64)
    big, small = Sequence("big", [1] * 20, GREEDY), Sequence("small", [1] * 2, GREEDY)
    first = Sequence("first", [1] * 10, GREEDY)
    for s in (first, big, small):
        sched.add(s)
    plan = sched.schedule()
    assert [s.request_id for s, _ in plan.prefill] == ["first"]  # big does not fit and small must wait behind it


def test_seeded_sampling_reproduces_and_differs_by_seed():
    engine = make_engine(init_std=0.1)
    prompt = [engine.tokenizer.encode("sampling test")]
    run = lambda seed: engine.generate(prompt, SamplingParams(max_tokens=24, temperature=1.0, top_p=0.9,  # noqa: E731
                                                              top_k=50, seed=seed, is_ignore_eos=True))[0]
    a, b, c = run(1), run(1), run(2)
    assert a["token_ids"] == b["token_ids"]
    assert a["token_ids"] != c["token_ids"]


def test_top_k_one_is_greedy_and_top_p_keeps_mass():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 0.0]])
    p = SamplingParams(temperature=1.0, top_k=1)
    assert sample(logits, [p, p], [make_generator(0, torch.device("cpu"))] * 2) == [1, 0]
    # top_p 0.5 keeps only index 1 and 3 at most; over many draws index 0 and 2 never appear
    p = SamplingParams(temperature=1.0, top_p=0.5)
    gen = make_generator(3, torch.device("cpu"))
    draws = {sample(logits[:1], [p], [gen])[0] for _ in range(200)}
    assert draws <= {1, 3} and 1 in draws


def test_stop_string_truncates_and_finishes():
    engine = make_engine(init_std=0.1)  # varied output, so the stop string first occurs mid-text
    prompt = engine.tokenizer.encode("stop test")
    free_run = engine.generate([prompt], SamplingParams(max_tokens=30, temperature=0.0, is_ignore_eos=True))[0]
    text = free_run["text"]
    stop = text[5:7]
    assert stop and stop not in text[:5]
    res = engine.generate([prompt], SamplingParams(max_tokens=30, temperature=0.0, is_ignore_eos=True,
                                                   stop=[stop]))[0]
    assert res["finish_reason"] == "stop" and res["text"] == text[:text.index(stop)]


def test_eos_finishes_unless_ignored():
    engine = make_engine()
    prompt = engine.tokenizer.encode("eos test")
    first = engine.generate([prompt], SamplingParams(max_tokens=1, temperature=0.0))[0]["token_ids"][0]
    engine.tokenizer.eos_token_ids = (first,)  # make the model's first greedy token count as EOS
    engine.outputs.tokenizer.eos_token_ids = (first,)
    res = engine.generate([prompt], SamplingParams(max_tokens=10, temperature=0.0))[0]
    assert res["finish_reason"] == "stop" and res["token_ids"] == [first]
    res = engine.generate([prompt], SamplingParams(max_tokens=10, temperature=0.0, is_ignore_eos=True))[0]
    assert res["finish_reason"] == "length" and len(res["token_ids"]) == 10


@pytest.mark.parametrize("kwargs,param", [({"max_tokens": 0}, "max_tokens"), ({"temperature": -1}, "temperature"),
                                          ({"top_p": 1.5}, "top_p"), ({"top_k": -2}, "top_k")])
def test_sampling_params_validation_names_field(kwargs, param):
    with pytest.raises(SamplingError) as exc:
        SamplingParams(**kwargs)
    assert exc.value.param == param


def test_incremental_detokenizer_holds_back_partial_utf8():
    tok = ByteTokenizer(None, (), 512)
    ids = list("✓ok".encode())  # ✓ is three bytes
    detok = IncrementalDetokenizer(tok)
    deltas = [detok.delta(ids[: i + 1], is_final=False) for i in range(len(ids))]
    assert deltas == ["", "", "✓", "o", "k"]


def test_profile_step_runs_and_kv_sizing_arithmetic():
    from gpusleuth.engine.config import preset
    from gpusleuth.engine.kv_cache import allocate_caches, bytes_per_block, num_blocks_for_memory
    from gpusleuth.engine.runner import profile_input

    runner = make_engine().runner
    cfg = runner.cfg
    # the GPU sizing pass runs this step (2 fresh sequences x 64 tokens) on a temporary cache of 2 x 4 blocks + 1
    runner._attach(allocate_caches(cfg.num_layers, 9, 16, runner.num_local_kv_heads, cfg.head_dim, torch.float32,
                                   torch.device("cpu")))
    logits = runner.execute(profile_input(2, 64, 4, 16, 8))
    assert logits.shape == (8, cfg.vocab_size) and torch.isfinite(logits).all()
    big = preset("llama3-8b")
    assert bytes_per_block(big, 1, 16, torch.bfloat16) == 16 * 128 * 1024  # 128 KiB of K+V per token
    assert bytes_per_block(big, 4, 16, torch.bfloat16) == 16 * 32 * 1024
    assert num_blocks_for_memory(10 << 30, 0.5, big, 1, 16, torch.bfloat16) == 2560


def test_model_dir_tokenizer_json_is_used(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from engine_helpers import save_hf_checkpoint
    from gpusleuth.engine.config import preset
    from gpusleuth.engine.tokenizer import HFTokenizer

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "engine": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    save_hf_checkpoint(preset("tiny"), tmp_path, max_shard_size=None)
    tok.save(str(tmp_path / "tokenizer.json"))
    engine = make_engine(str(tmp_path))
    assert isinstance(engine.tokenizer, HFTokenizer)
    assert engine.tokenizer.encode("hello engine world") == [1, 3, 2]
    res = engine.generate([[1, 3, 2]], SamplingParams(max_tokens=4, temperature=0.0, is_ignore_eos=True))[0]
    assert res["text"] == engine.tokenizer.decode(res["token_ids"])
