"""A validated request body turned into engine work: one Job (prompt ids + SamplingParams) per choice.

Choices are numbered as OpenAI does: prompt i's j-th of n is index i * n + j. With a seed, choice j samples with
seed + j, so n > 1 gives different but reproducible choices. Every range is checked here, before anything reaches
the engine; an error names the field.
"""
from __future__ import annotations

from dataclasses import dataclass

from gpusleuth.engine.api.chat_template import ChatTemplate, ChatTemplateError
from gpusleuth.engine.api.errors import ApiError
from gpusleuth.engine.api.requests import ChatCompletionRequest, CompletionRequest
from gpusleuth.engine.sequence import SEED_END, SamplingError, SamplingParams
from gpusleuth.engine.tokenizer import Tokenizer

MAX_CHOICES = 64  # prompts x n in one request


@dataclass(slots=True)
class Job:
    index: int  # the choice's index in the response
    prompt_index: int
    prompt_ids: list[int]
    params: SamplingParams


@dataclass(slots=True)
class Plan:
    """What one HTTP request asks of the engine and how to answer it."""

    jobs: list[Job]
    prompts: list[list[int]]  # token ids per prompt (usage counts each prompt once)
    is_stream: bool
    is_include_usage: bool
    is_continuous_usage: bool
    num_top_logprobs: int | None  # None = no logprobs in the answer
    echo: list[str] | None = None  # prompt texts to put before each choice's text


def check_model(model: str | None, served: str) -> None:
    if model is not None and model != served:
        raise ApiError(404, f"the model '{model}' does not exist; this server serves '{served}'", "model")


def _sampling(req: CompletionRequest | ChatCompletionRequest, max_tokens: int, logprobs: int | None,
              seed: int | None) -> SamplingParams:
    try:
        return SamplingParams(
            max_tokens=max_tokens, temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p, top_k=req.top_k or 0, seed=seed,
            stop=[req.stop] if isinstance(req.stop, str) else list(req.stop or []),
            stop_token_ids=list(req.stop_token_ids or []), is_ignore_eos=bool(req.ignore_eos),
            min_tokens=req.min_tokens or 0, presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
            logit_bias={int(k): v for k, v in (req.logit_bias or {}).items()}, logprobs=logprobs)
    except SamplingError as exc:
        raise ApiError(400, str(exc), exc.param) from None


def _jobs(req, prompts: list[list[int]], max_tokens: list[int], logprobs: int | None) -> list[Job]:
    n = req.n or 1
    if len(prompts) * n > MAX_CHOICES:
        raise ApiError(400, f"{len(prompts)} prompts x n={n} is more than {MAX_CHOICES} choices", "n")
    jobs = []
    for i, ids in enumerate(prompts):
        for j in range(n):
            seed = None if req.seed is None else (req.seed + j) % SEED_END
            jobs.append(Job(i * n + j, i, ids, _sampling(req, max_tokens[i], logprobs, seed)))
    return jobs


def _usage_flags(req) -> tuple[bool, bool, bool]:
    opts = req.stream_options
    if opts is not None and not req.stream:
        raise ApiError(400, "stream_options is only allowed when stream is true", "stream_options")
    return bool(req.stream), bool(opts and opts.include_usage), bool(opts and opts.continuous_usage_stats)


def _encode(tokenizer: Tokenizer, text: str, add_special_tokens: bool, param: str) -> list[int]:
    try:
        return tokenizer.encode(text, add_special_tokens=add_special_tokens)
    except (ValueError, TypeError) as exc:  # the tokenizer refused this text
        raise ApiError(400, f"could not be tokenized: {exc}", param) from None


def completion_plan(req: CompletionRequest, tokenizer: Tokenizer) -> Plan:
    """Jobs for a /v1/completions body (prompt: a string, token ids, or a list of either)."""
    if req.suffix:
        raise ApiError(400, "suffix is not supported (no insertion models)", "suffix")
    if req.best_of is not None and req.best_of != (req.n or 1):
        raise ApiError(400, "best_of must equal n (choices are not ranked)", "best_of")
    if req.echo and req.logprobs is not None:
        raise ApiError(400, "echo with logprobs needs prompt logprobs, which this server does not compute", "echo")
    prompt = req.prompt
    if isinstance(prompt, str):
        texts: list = [prompt]
    elif prompt and isinstance(prompt[0], int) or not prompt:
        texts = [prompt]
    else:
        texts = list(prompt)
    prompts = [_encode(tokenizer, t, True, "prompt") if isinstance(t, str) else list(t) for t in texts]
    jobs = _jobs(req, prompts, [req.max_tokens or 16] * len(prompts), req.logprobs)
    echo = [tokenizer.decode(ids) for ids in prompts] if req.echo else None
    return Plan(jobs, prompts, *_usage_flags(req), req.logprobs, echo)


def chat_plan(req: ChatCompletionRequest, tokenizer: Tokenizer, template: ChatTemplate,
              max_model_len: int) -> Plan:
    """Jobs for a /v1/chat/completions body: the messages rendered with the chat template."""
    if req.top_logprobs is not None and not req.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    add_prompt = True if req.add_generation_prompt is None else req.add_generation_prompt
    try:
        text = template.render(messages, add_prompt)
    except ChatTemplateError as exc:
        raise ApiError(400, str(exc), "messages") from None
    ids = _encode(tokenizer, text, not template.has_special_tokens, "messages")
    max_tokens = req.max_completion_tokens or req.max_tokens or max(1, max_model_len - len(ids))
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    return Plan(_jobs(req, [ids], [max_tokens], logprobs), [ids], *_usage_flags(req), logprobs)
