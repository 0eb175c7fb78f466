"""Next-token sampling for a batch of rows with per-request parameters: greedy, temperature, top-k, top-p, seed,
presence/frequency/repetition penalties, logit biases, min_tokens, and logprobs.

Rows are independent: `sample_rows` returns an error for a row whose sampling failed instead of raising, so one
request's failure never stops the others (engine.py fails that request alone). The numerics stay finite for every
parameter SamplingParams accepts: the row's maximum is subtracted before dividing by the temperature, and the most
likely token always survives top-k/top-p (a top_p below float32's smallest value would otherwise drop every token).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gpusleuth.engine.sequence import SamplingParams, Sequence


@dataclass(slots=True)
class TokenLogprobs:
    """The sampled token's logprob (of the model's own distribution) and the most likely tokens with theirs."""

    logprob: float
    top: list[tuple[int, float]]


@dataclass(slots=True)
class Sampled:
    token: int
    logprobs: TokenLogprobs | None = None
    error: Exception | None = None


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits [V] outside the top-k and outside the smallest set whose probability reaches top_p."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # keep a token if the mass before it is < top_p; the most likely token always survives
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop_sorted[0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def apply_processors(logits: torch.Tensor, seq: Sequence, eos_token_ids: tuple[int, ...]) -> torch.Tensor:
    """A copy of one row of logits [V] with seq's penalties, biases and min_tokens mask applied (vLLM semantics:
    presence/frequency count output tokens, repetition counts prompt and output)."""
    p, row = seq.params, logits.clone()
    device = row.device
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(seq.token_ids)), dtype=torch.long, device=device)
        vals = row[seen]
        row[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and seq.num_output:
        out = torch.tensor(seq.token_ids[seq.num_prompt:], dtype=torch.long, device=device)
        counts = torch.bincount(out, minlength=row.shape[-1]).to(row.dtype)
        row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)
    if p.logit_bias:
        ids = torch.tensor(list(p.logit_bias), dtype=torch.long, device=device)
        row[ids] += torch.tensor(list(p.logit_bias.values()), dtype=row.dtype, device=device)
    if seq.num_output < p.min_tokens:
        banned = [*p.stop_token_ids, *(() if p.is_ignore_eos else eos_token_ids)]
        if banned:
            row[torch.tensor(banned, dtype=torch.long, device=device)] = float("-inf")
    return row


def _draw(row: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    if p.is_greedy:
        return int(row.argmax())
    scaled = (row - row.max()) / p.temperature  # <= 0 everywhere: finite for every accepted temperature
    probs = _filter_top_k_top_p(scaled, p.top_k, p.top_p).softmax(-1)
    return int(torch.multinomial(probs, 1, generator=gen)[0])


def _logprobs(raw: torch.Tensor, token: int, num_top: int) -> TokenLogprobs:
    lp = torch.log_softmax(raw.float(), -1)
    top = torch.topk(lp, num_top) if num_top else None
    pairs = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
    return TokenLogprobs(float(lp[token]), pairs)


def sample_rows(logits: torch.Tensor, seqs: list[Sequence], eos_token_ids: tuple[int, ...] = ()) -> list[Sampled]:
    """One Sampled per row of logits [S, V] (float32) for `seqs` in row order; a failed row carries its error."""
    tokens = logits.argmax(dim=-1).tolist()  # the whole batch at once: greedy rows without processors are done
    out = []
    for row, seq in enumerate(seqs):
        p = seq.params
        if p.is_greedy and not p.has_processors and p.logprobs is None:
            out.append(Sampled(tokens[row]))
            continue
        try:
            processed = apply_processors(logits[row], seq, eos_token_ids) if p.has_processors else logits[row]
            token = _draw(processed, p, seq.generator)
            lps = _logprobs(logits[row], token, p.logprobs) if p.logprobs is not None else None
            out.append(Sampled(token, lps))
        except (RuntimeError, ValueError, IndexError) as exc:  # torch's errors for bad values (NaN logits, ...)
            out.append(Sampled(tokens[row], None, exc))
    return out


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None]) -> list[int]:
    """One token id per row of logits [S, V] (float32): temperature, top-k, top-p and seeds only (no history);
    raises on a failed row."""
    seqs = [Sequence("", [0], p, generator=g) for p, g in zip(params, generators)]
    results = sample_rows(logits, seqs)
    for r in results:
        if r.error is not None:
            raise r.error
    return [r.token for r in results]


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A seeded generator for reproducible sampling of one request (None = the global RNG)."""
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
