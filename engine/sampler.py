"""Next-token sampling for a batch of rows with per-request parameters (greedy, temperature, top-k, top-p, seed)."""
from __future__ import annotations

import torch

from gpusleuth.engine.sequence import SamplingParams


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits [V] outside the top-k and outside the smallest set whose probability reaches top_p."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # keep a token if the mass before it is < top_p (so the most likely token always survives)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None]) -> list[int]:
    """One token id per row of logits [S, V] (float32)."""
    tokens = logits.argmax(dim=-1)
    for row, (p, gen) in enumerate(zip(params, generators)):
        if p.is_greedy:
            continue
        row_logits = _filter_top_k_top_p(logits[row] / p.temperature, p.top_k, p.top_p)
        probs = row_logits.softmax(-1)
        tokens[row] = torch.multinomial(probs, 1, generator=gen)[0]
    return tokens.tolist()


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A seeded generator for reproducible sampling of one request (None = the global RNG)."""
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
