"""Tensor parallelism over gloo on CPU: `generate --tp 2` (this process is rank 0, rank 1 is spawned) gives the
tokens of `--tp 1`, from a sharded safetensors checkpoint (each rank slicing its shard) and from random weights.
"""
from __future__ import annotations

import json

import pytest

from engine_helpers import PROMPTS, hf_greedy, save_hf_checkpoint
from gpusleuth.engine import cli
from gpusleuth.engine.config import preset
from gpusleuth.engine.tokenizer import ByteTokenizer


def _generate(capsys, *flags: str, prompts: list[str] = PROMPTS, budget: int = 32) -> list[list[int]]:
    argv = ["generate", "--device", "cpu", "--max-tokens", "24", "--ignore-eos", "--json", "--max-num-batched-tokens",
            str(budget), "--max-num-seqs", "4", "--no-spans", "--cpu-threads", "1", *flags]
    for p in prompts:
        argv += ["--prompt", p]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    return [r["token_ids"] for r in json.loads(out)["results"]]


def test_tp2_equals_tp1_from_sharded_checkpoint(tmp_path, capsys):
    cfg = preset("tiny")
    model = save_hf_checkpoint(cfg, tmp_path, seed=99, max_shard_size="1MB")
    tp1 = _generate(capsys, "--model-dir", str(tmp_path), "--tp", "1")
    tp2 = _generate(capsys, "--model-dir", str(tmp_path), "--tp", "2")
    assert tp2 == tp1
    tok = ByteTokenizer(cfg.bos_token_id, cfg.eos_token_ids, cfg.vocab_size)
    assert tp1[0] == hf_greedy(model, tok.encode(PROMPTS[0]), 24)[0], "TP=1 itself should match transformers"


def test_tp2_equals_tp1_random_weights(capsys):
    # a 1.6k-token prompt in one step: a message of tens of KB (more than the gloo channel's one-broadcast buffer)
    prompts = [*PROMPTS, "long " * 320]
    tp1 = _generate(capsys, "--preset", "tiny", "--tp", "1", "--seed", "5", "--init-std", "0.1", prompts=prompts,
                    budget=2048)
    tp2 = _generate(capsys, "--preset", "tiny", "--tp", "2", "--seed", "5", "--init-std", "0.1", prompts=prompts,
                    budget=2048)
    assert tp2 == tp1


def test_tp_that_does_not_divide_heads_is_a_config_error(capsys):
    # tiny has 8 heads and 4 KV heads: 3 divides neither; refused before any rank is spawned
    code = cli.main(["generate", "--device", "cpu", "--tp", "3", "--prompt", "x", "--no-spans"])
    assert code == cli.EXIT_CONFIG
    assert "--tp" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--kernels", "cuda-magic"), ("--max-num-seqs", "0"), ("--dtype", "fp8")])
def test_bad_flags_name_the_flag(capsys, flag, value):
    assert cli.main(["generate", "--device", "cpu", "--prompt", "x", flag, value]) == cli.EXIT_CONFIG
    assert flag in capsys.readouterr().err
