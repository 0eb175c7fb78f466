"""Engine checks that need NVIDIA GPUs (skipped elsewhere). Random weights are generated on the GPU.

- llama3-8b bf16 logits vs transformers (fp32 reference): our bf16 error is within ~transformers' own bf16 error.
- TP=2 / TP=4 give TP=1's greedy tokens (float32: exact; bfloat16: equal up to the first near-tie, with the logits
  of the shared prefix within bf16 tolerance: 1.5x the reference's own bf16-vs-float32 logit error in the same run).
- fused Triton kernels vs --kernels torch, 128 greedy tokens on llama3-8b (same criteria).
- CUDA-graph decode gives eager decode's tokens, and graphs are really replayed.
Figures are printed (run with -s) so they can be quoted.
"""
from __future__ import annotations

import functools
import gc
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine_helpers import LogitsRecorder, make_hf_model  # noqa: E402

from gpusleuth.engine.config import EngineConfig, ModelSource, preset  # noqa: E402
from gpusleuth.engine.engine import LLMEngine  # noqa: E402
from gpusleuth.engine.loader import state_dict_source  # noqa: E402
from gpusleuth.engine.runner import ModelRunner  # noqa: E402
from gpusleuth.engine.sequence import SamplingParams  # noqa: E402
from gpusleuth.engine.spans import SpanEmitter  # noqa: E402
from gpusleuth.engine.tokenizer import ByteTokenizer, load_tokenizer  # noqa: E402
from gpusleuth.engine.workers import LaunchSpec, start_ranks  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off on the shared hosts

TEXTS = ["The capital of France is", "def fibonacci(n):\n    ", "Once upon a time, in a land far away, there"]
# Two bf16 runs that differ only in rounding order (fused kernels vs torch, TP shards) differ by about as much as
# bf16 differs from float32. Measured on H100 (llama3-8b, random weights, logits std ~1.3): ours bf16 vs
# transformers fp32 0.48, transformers bf16 vs fp32 0.61, fused vs torch bf16 0.35-0.41 -- so a fixed 0.25 failed.
# The bound is therefore taken from the reference itself in the same run, like the transformers test's 1.5x.
BF16_NOISE_FACTOR = 1.5


def bf16_tolerance(ref32, ref16, label: str) -> float:
    """1.5x the reference's own bf16 error: max |dlogit| between its float32 and bfloat16 runs (shared prefix)."""
    noise = max(delta for _, delta in compare(ref32, ref16, f"{label} bf16 vs fp32 (noise)"))
    print(f"{label}: bf16 tolerance {BF16_NOISE_FACTOR} x {noise:.4f} = {BF16_NOISE_FACTOR * noise:.4f}")
    return BF16_NOISE_FACTOR * noise


def _gib_free() -> float:
    return torch.cuda.mem_get_info()[0] / 2**30


def _prompts(cfg) -> list[list[int]]:
    tok = ByteTokenizer(cfg.bos_token_id, cfg.eos_token_ids, cfg.vocab_size)
    return [tok.encode(t) for t in TEXTS]


def _release() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def greedy(preset_name: str, num_tokens: int, *, tp: int = 1, dtype: str = "bfloat16", kernels: str = "auto",
           graphs: bool = True, init_std: float = 0.02) -> tuple[list[list[int]], list[torch.Tensor], int]:
    """(tokens per prompt, logits per prompt [num_tokens, V] on CPU, CUDA-graph replays) of one engine run."""
    ecfg = EngineConfig(device="cuda", dtype=dtype, kernels=kernels, tp=tp, num_gpu_blocks=1024, max_num_seqs=8,
                        max_num_batched_tokens=1024, max_model_len=2048, is_cuda_graphs=graphs, init_std=init_std)
    spec = LaunchSpec(source=ModelSource(preset=preset_name), engine=ecfg, is_spans=False)
    with start_ranks(spec) as (runner, broadcast):
        engine = LLMEngine(runner, load_tokenizer(runner.cfg), broadcast=broadcast,
                           emitter=SpanEmitter(0, is_enabled=False))
        rec = LogitsRecorder()
        engine.logits_hook = rec
        res = engine.generate(_prompts(runner.cfg), SamplingParams(max_tokens=num_tokens, temperature=0.0,
                                                                   is_ignore_eos=True))
        replays = runner.graphs.num_replays if runner.graphs is not None else 0
        ids = sorted(rec.rows)
        logits = [torch.stack(rec.rows[i]) for i in ids]
    del engine, runner
    _release()
    return [r["token_ids"] for r in res], logits, replays


def compare(ref, got, label: str) -> list[int]:
    """Per prompt, how many leading tokens agree; prints the logit differences over that shared prefix."""
    (ref_tokens, ref_logits, _), (tokens, logits, _) = ref, got
    prefixes = []
    for i, (a, b) in enumerate(zip(ref_tokens, tokens)):
        n = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        upto = min(n + 1, len(a))  # the diverging step still saw the same context
        delta = (ref_logits[i][:upto] - logits[i][:upto]).abs().max().item()
        print(f"{label} prompt {i}: {n}/{len(a)} tokens equal, max |dlogit| over shared prefix {delta:.4f}")
        prefixes.append((n, delta))
    return prefixes


def test_llama3_8b_bf16_logits_match_transformers():
    if _gib_free() < 60:
        pytest.skip(f"needs ~60 GiB free GPU memory, {_gib_free():.0f} GiB free")
    cfg = preset("llama3-8b")
    hf = make_hf_model(cfg, seed=0, dtype=torch.float32, device="cuda", std=0.02)  # built on the GPU directly
    ecfg = EngineConfig(device="cuda", dtype="bfloat16", num_gpu_blocks=256, max_num_seqs=4, max_model_len=1024)
    runner = ModelRunner(cfg, ecfg, torch.device("cuda"), source=state_dict_source(hf.state_dict()))
    runner.init_kv_cache(256)
    engine = LLMEngine(runner, load_tokenizer(cfg), emitter=SpanEmitter(0, is_enabled=False))
    rec = LogitsRecorder()
    engine.logits_hook = rec
    prompts = _prompts(cfg)
    res = engine.generate(prompts, SamplingParams(max_tokens=16, temperature=0.0, is_ignore_eos=True))
    ours = [torch.stack(rec.rows[k]) for k in sorted(rec.rows)]
    graphs_used = runner.graphs is not None and runner.graphs.num_replays > 0
    del engine, runner
    _release()

    @torch.no_grad()
    def hf_logits(model) -> list[torch.Tensor]:  # logits that predicted each of our generated tokens
        out = []
        for p, r in zip(prompts, res):
            seq = torch.tensor([p + r["token_ids"][:-1]], device="cuda")
            out.append(model(seq).logits[0, len(p) - 1:].float().cpu())
        return out

    ref32 = hf_logits(hf)
    hf.to(torch.bfloat16)
    ref16 = hf_logits(hf)
    err_ours = max((o - r).abs().max().item() for o, r in zip(ours, ref32))
    err_hf = max((h - r).abs().max().item() for h, r in zip(ref16, ref32))
    top1_ours = sum((o.argmax(-1) == r.argmax(-1)).sum().item() for o, r in zip(ours, ref32))
    top1_hf = sum((h.argmax(-1) == r.argmax(-1)).sum().item() for h, r in zip(ref16, ref32))
    total = sum(len(o) for o in ours)
    print(f"llama3-8b bf16 vs transformers fp32: ours max|dlogit| {err_ours:.4f} (top-1 {top1_ours}/{total}); "
          f"transformers bf16 {err_hf:.4f} (top-1 {top1_hf}/{total}); cuda graphs used: {graphs_used}")
    assert err_ours <= 1.5 * err_hf + 0.02
    assert top1_ours >= top1_hf - 2


@functools.cache
def _tp1_reference(dtype: str):
    """TP=1 run shared by the TP=2, 4 and 8 cases."""
    return greedy("llama3-8b", 64, tp=1, dtype=dtype)


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_tp_equals_tp1(tp):
    if torch.cuda.device_count() < tp:
        pytest.skip(f"needs {tp} GPUs, {torch.cuda.device_count()} visible")
    for dtype in ("float32", "bfloat16"):
        ref = _tp1_reference(dtype)
        got = greedy("llama3-8b", 64, tp=tp, dtype=dtype)
        stats = compare(ref, got, f"TP={tp} vs TP=1 {dtype}")
        assert got[2] > 0, "decode steps should have replayed CUDA graphs"
        if dtype == "float32":
            assert got[0] == ref[0]
        else:
            tol = bf16_tolerance(_tp1_reference("float32"), ref, f"TP=1 (for TP={tp})")
            assert all(delta <= tol for _, delta in stats)


def test_fused_kernels_vs_torch_128_tokens_llama3_8b():
    refs = {}
    for dtype in ("float32", "bfloat16"):
        ref = refs[dtype] = greedy("llama3-8b", 128, dtype=dtype, kernels="torch")
        got = greedy("llama3-8b", 128, dtype=dtype, kernels="fused")
        stats = compare(ref, got, f"fused vs torch {dtype}")
        if dtype == "float32":
            assert got[0] == ref[0]
        else:
            tol = bf16_tolerance(refs["float32"], ref, "torch kernels")
            assert all(delta <= tol for _, delta in stats)


def test_cuda_graph_decode_equals_eager():
    eager = greedy("llama3-1b", 48, dtype="float32", graphs=False)
    graphed = greedy("llama3-1b", 48, dtype="float32", graphs=True)
    assert eager[2] == 0 and graphed[2] > 0
    compare(eager, graphed, "graphs vs eager fp32")
    assert graphed[0] == eager[0]
