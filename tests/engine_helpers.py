"""Shared helpers of the engine tests: Hugging Face reference models, small CPU engines, a server thread."""
from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

import torch

from gpusleuth.engine.config import EngineConfig, ModelConfig, preset
from gpusleuth.engine.engine import LLMEngine
from gpusleuth.engine.loop import EngineLoop
from gpusleuth.engine.runner import ModelRunner
from gpusleuth.engine.spans import SpanEmitter
from gpusleuth.engine.tokenizer import load_tokenizer

PROMPTS = ["The quick brown fox", "GPU inference engines batch requests continuously, so a long prompt",
           "Ünïcödé bytes ✓ and a third prompt that is longer than the others by a fair margin of text."]


def hf_config(cfg: ModelConfig, **extra):
    """A transformers LlamaConfig with the same shape as `cfg`."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta,
        rope_scaling=dict(cfg.rope_scaling) if cfg.rope_scaling else None,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=cfg.is_tied_embeddings,
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, attn_implementation="eager", **extra)


def make_hf_model(cfg: ModelConfig, seed: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu",
                  std: float = 0.1):
    """A seeded random transformers LlamaForCausalLM of shape `cfg` (eval mode).

    std 0.1 rather than transformers' 0.02: the tiny model then generates varied tokens (at 0.02 greedy output
    collapses into repeating one token within a few steps, which would make token equality a weak check).
    """
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(hf_config(cfg, initializer_range=std)).to(dtype)
    return model.eval()


def save_hf_checkpoint(cfg: ModelConfig, path: Path, seed: int = 0, max_shard_size: str | None = "2MB",
                       std: float = 0.1):
    """Random HF model saved as (sharded) safetensors in `path`; returns the model."""
    model = make_hf_model(cfg, seed, std=std)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(path), safe_serialization=True, **kwargs)
    return model


@torch.no_grad()
def hf_greedy(model, prompt: list[int], num_tokens: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and the logits [num_tokens, V] that chose them, with transformers' own KV cache."""
    device = next(model.parameters()).device
    out = model(torch.tensor([prompt], device=device), use_cache=True)
    tokens, logits = [], []
    for _ in range(num_tokens):
        step_logits = out.logits[0, -1].float()
        tok = int(step_logits.argmax())
        tokens.append(tok)
        logits.append(step_logits.cpu())
        out = model(torch.tensor([[tok]], device=device), past_key_values=out.past_key_values, use_cache=True)
    return tokens, torch.stack(logits)


def make_engine(model_dir: str = "", cfg: ModelConfig | None = None, emitter: SpanEmitter | None = None,
                **engine_kw) -> LLMEngine:
    """A CPU engine (fp32, torch ops) for `model_dir` or the tiny preset."""
    cfg = ModelConfig.from_hf_dir(model_dir) if model_dir else (cfg or preset("tiny"))
    defaults = {"device": "cpu", "num_cpu_blocks": 256, "max_num_seqs": 64, "max_num_batched_tokens": 512,
                "num_cpu_threads": 1}  # tiny model on a shared 2-core box: one thread is far faster
    ecfg = EngineConfig(**{**defaults, **engine_kw})
    runner = ModelRunner(cfg, ecfg, torch.device("cpu"), model_dir=model_dir)
    runner.init_kv_cache(runner.suggest_num_blocks())
    return LLMEngine(runner, load_tokenizer(cfg, model_dir), emitter=emitter or SpanEmitter(0, is_enabled=False))


class LogitsRecorder:
    """engine.logits_hook collecting each request's logits row per output position."""

    def __init__(self) -> None:
        self.rows: dict[str, list[torch.Tensor]] = {}

    def __call__(self, seqs, logits: torch.Tensor) -> None:
        for seq, row in zip(seqs, logits):
            self.rows.setdefault(seq.request_id, []).append(row.detach().cpu().clone())


class ServerThread:
    """The real aiohttp server around an engine, on its own thread and event loop (port chosen by the OS)."""

    def __init__(self, engine: LLMEngine, **server_kw) -> None:
        from gpusleuth.engine.config import ServerConfig

        self.cfg = dataclasses.replace(ServerConfig(port=0), **server_kw)
        self.loop = EngineLoop(engine, self.cfg.max_waiting)
        self.engine = engine
        self.port = 0
        self._ready = threading.Event()
        self._aio: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        from gpusleuth.engine.server import serve

        async def main() -> None:
            self._aio = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready = self._aio.create_future()
            ready.add_done_callback(lambda f: (setattr(self, "port", f.result()), self._ready.set()))
            await serve(self.loop, self.cfg, self.engine.model_name, self._stop, ready)

        asyncio.run(main())

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        assert self._ready.wait(30), "server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._aio.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
