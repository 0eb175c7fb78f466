"""The request bodies of /v1/completions and /v1/chat/completions as pydantic models: strict types (a string is
never a number), the ranges the sampler is safe in, and no unknown fields (a field this server does not implement
is refused with a 400 naming it, as OpenAI does). /openapi.json is generated from these."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from gpusleuth.engine.sequence import (MAX_LOGIT_BIAS, MAX_LOGPROBS, MAX_PENALTY, MAX_REPETITION_PENALTY,
                                       MAX_TEMPERATURE, MIN_REPETITION_PENALTY, SEED_END)

MAX_N = 16
MAX_STOPS = 16


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (JSON "\ud800") is no Unicode text
        raise ValueError(f"is not valid Unicode: lone surrogate at position {exc.start}") from None
    return text


Text = Annotated[StrictStr, AfterValidator(_encodable)]
TokenId = Annotated[StrictInt, Field(ge=0, lt=2**31)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(_Strict):
    include_usage: StrictBool | None = None
    continuous_usage_stats: StrictBool | None = None  # vLLM: usage on every chunk


class _Sampling(_Strict):
    """Fields both endpoints share (OpenAI's, then vLLM's extras)."""

    model: Text | None = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[Float, Field(ge=0.0, le=MAX_TEMPERATURE)] | None = None
    top_p: Annotated[Float, Field(gt=0.0, le=1.0)] | None = None
    seed: Annotated[StrictInt, Field(ge=0, lt=SEED_END)] | None = None
    stop: Text | Annotated[list[Text], Field(max_length=MAX_STOPS)] | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[Float, Field(ge=-MAX_PENALTY, le=MAX_PENALTY)] | None = None
    frequency_penalty: Annotated[Float, Field(ge=-MAX_PENALTY, le=MAX_PENALTY)] | None = None
    logit_bias: dict[Annotated[Text, Field(pattern=r"^\d{1,10}$")],
                     Annotated[Float, Field(ge=-MAX_LOGIT_BIAS, le=MAX_LOGIT_BIAS)]] | None = None
    user: Text | None = None  # the end user, for abuse monitoring: accepted, no effect on the output
    # vLLM's sampling extras
    top_k: Annotated[StrictInt, Field(ge=-1)] | None = None
    repetition_penalty: Annotated[Float, Field(ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY)] | None = None
    min_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    ignore_eos: StrictBool | None = None
    stop_token_ids: Annotated[list[TokenId], Field(max_length=64)] | None = None


Prompt = Text | list[TokenId] | Annotated[list[Text], Field(min_length=1, max_length=64)] | Annotated[
    list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1, max_length=64)]


class CompletionRequest(_Sampling):
    prompt: Prompt
    echo: StrictBool | None = None
    logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    best_of: Annotated[StrictInt, Field(ge=1, le=MAX_N)] | None = None  # must equal n (no ranking)
    suffix: Text | None = None  # refused unless empty: no insertion models here


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[TextPart], Field(max_length=256)] | None = None
    name: Text | None = None

    def text(self) -> str:
        """The message's text (parts joined)."""
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)]
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    add_generation_prompt: StrictBool | None = None  # vLLM: end the prompt with the assistant's header (default)
