"""OpenAI /v1/completions request parsing and response bodies (strict types; errors name the field)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gpusleuth.engine.outputs import RequestOutput
from gpusleuth.engine.sequence import SamplingError, SamplingParams
from gpusleuth.engine.tokenizer import Tokenizer


class ApiError(Exception):
    """An error answered with an OpenAI-style body: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 err_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.err_type = status, message, param, err_type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.err_type, "param": self.param,
                          "code": self.status}}


@dataclass(slots=True)
class CompletionRequest:
    prompt_ids: list[int]
    params: SamplingParams
    is_stream: bool
    is_include_usage: bool


_ABSENT = object()


def _get(body: dict, key: str, types: tuple[type, ...], default: Any) -> Any:
    value = body.get(key, _ABSENT)
    if value is _ABSENT or value is None:
        return default
    is_bad_bool = isinstance(value, bool) and bool not in types
    if is_bad_bool or not isinstance(value, types):
        names = " or ".join(t.__name__.replace("str", "string").replace("int", "integer") for t in types)
        raise ApiError(400, f"'{key}' must be {names}, got {type(value).__name__}", key)
    return value


def _prompt_ids(body: dict, tokenizer: Tokenizer) -> list[int]:
    prompt = body.get("prompt", _ABSENT)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return prompt
    raise ApiError(400, "'prompt' must be a string or a non-empty list of token ids (one prompt per request)",
                   "prompt")


def parse_completion(body: Any, tokenizer: Tokenizer, served_model: str) -> CompletionRequest:
    """Validate a /v1/completions JSON body; raise ApiError(400/404) naming the offending field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = _get(body, "model", (str,), served_model)
    if model != served_model:
        raise ApiError(404, f"the model '{model}' does not exist; this server serves '{served_model}'", "model",
                       "not_found_error")
    if _get(body, "n", (int,), 1) != 1 or _get(body, "best_of", (int,), 1) != 1:
        raise ApiError(400, "only n=1 (and best_of=1) is supported", "n")
    if _get(body, "echo", (bool,), False) or _get(body, "logprobs", (int,), None) is not None:
        raise ApiError(400, "echo and logprobs are not supported", "logprobs")
    stop = _get(body, "stop", (str, list), [])
    stop = [stop] if isinstance(stop, str) else stop
    if not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "'stop' must be a string or a list of strings", "stop")
    options = _get(body, "stream_options", (dict,), {})
    try:
        params = SamplingParams(
            max_tokens=_get(body, "max_tokens", (int,), 16), temperature=float(_get(body, "temperature",
                                                                                    (int, float), 1.0)),
            top_p=float(_get(body, "top_p", (int, float), 1.0)), top_k=_get(body, "top_k", (int,), 0),
            seed=_get(body, "seed", (int,), None), stop=stop,
            stop_token_ids=_get(body, "stop_token_ids", (list,), []),
            is_ignore_eos=_get(body, "ignore_eos", (bool,), False))
    except SamplingError as exc:
        raise ApiError(400, str(exc), exc.param) from None
    return CompletionRequest(_prompt_ids(body, tokenizer), params, _get(body, "stream", (bool,), False),
                             bool(_get(options, "include_usage", (bool,), False)))


def usage(out: RequestOutput) -> dict[str, int]:
    return {"prompt_tokens": out.num_prompt_tokens, "completion_tokens": out.num_output_tokens,
            "total_tokens": out.num_prompt_tokens + out.num_output_tokens}


def chunk(request_id: str, model: str, created: int, text: str, finish_reason: str | None,
          with_usage: bool) -> dict[str, Any]:
    """One streamed choice update (usage null on every chunk when include_usage is set, as OpenAI does)."""
    body = {"id": request_id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}
    if with_usage:
        body["usage"] = None
    return body


def usage_chunk(request_id: str, model: str, created: int, last: RequestOutput) -> dict[str, Any]:
    return {"id": request_id, "object": "text_completion", "created": created, "model": model, "choices": [],
            "usage": usage(last)}


def completion(request_id: str, model: str, text: str, last: RequestOutput) -> dict[str, Any]:
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason}],
            "usage": usage(last)}
