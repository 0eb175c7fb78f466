"""The answer to one request, built from the engine's updates: server-sent event chunks as they come, or one JSON
body at the end; completions and chat completions (OpenAI's shapes, responses.py).

Streamed chunks are the hot path (one per token per stream), so they are written from templates: the fixed part of
a chunk is formatted once per request and only the text, finish reason and logprobs are encoded per chunk
(tests/test_engine_server_api.py checks every chunk against the pydantic chunk models).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from gpusleuth.engine.api.params import Plan
from gpusleuth.engine.api.responses import (AssistantMessage, ChatChoice, ChatCompletionResponse, ChatLogprobs,
                                            CompletionChoice, CompletionLogprobs, CompletionResponse, Usage)
from gpusleuth.engine.outputs import RequestOutput
from gpusleuth.engine.sampler import TokenLogprobs
from gpusleuth.engine.tokenizer import Tokenizer

DONE = b"data: [DONE]\n\n"
_dumps = json.dumps


@dataclass(slots=True)
class ChoiceState:
    texts: list[str] = field(default_factory=list)
    num_chars: int = 0  # text written so far (completion logprobs' text_offset)
    num_tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[tuple[int, TokenLogprobs]] = field(default_factory=list)  # (token id, its logprobs)


class Answer:
    """Shared by both endpoints: per-choice state, usage and the stream's framing."""

    object_name = ""

    def __init__(self, plan: Plan, request_id: str, model: str, tokenizer: Tokenizer) -> None:
        self.plan, self.request_id, self.model, self.tokenizer = plan, request_id, model, tokenizer
        self.created = int(time.time())
        self.choices = [ChoiceState() for _ in plan.jobs]
        self.num_prompt_tokens = sum(len(p) for p in plan.prompts)
        head = {"id": request_id, "object": self.object_name, "created": self.created, "model": model}
        # the fixed start of every chunk: `data: {"id":...,"model":...,"choices":[{"index":`
        self._head = "data: " + _dumps(head, separators=(",", ":"))[:-1] + ',"choices":[{"index":'
        self._usage_tail = ',"usage":null}' if plan.is_include_usage else "}"

    def usage(self) -> Usage:
        out = sum(c.num_tokens for c in self.choices)
        return Usage(prompt_tokens=self.num_prompt_tokens, completion_tokens=out,
                     total_tokens=self.num_prompt_tokens + out)

    def take(self, index: int, out: RequestOutput) -> ChoiceState:
        state = self.choices[index]
        state.num_tokens = out.num_output_tokens
        state.finish_reason = out.finish_reason if out.is_finished else None
        if not self.plan.is_stream:
            state.texts.append(out.delta_text)
        if out.logprobs is not None and self.plan.num_top_logprobs is not None:
            state.logprobs += zip(out.new_token_ids, out.logprobs)
        return state

    def chunk(self, index: int, out: RequestOutput) -> str:
        """One SSE event for an update of choice `index`."""
        state = self.take(index, out)
        text = out.delta_text
        lp = self._chunk_logprobs(state, out) if out.logprobs is not None and self.plan.num_top_logprobs is not None \
            else "null"
        state.num_chars += len(text)
        finish = _dumps(state.finish_reason) if state.finish_reason else "null"
        tail = self._usage_json() + "}" if self.plan.is_continuous_usage else self._usage_tail
        return f"{self._head}{index},{self._delta(text)},\"logprobs\":{lp},\"finish_reason\":{finish}}}]{tail}\n\n"

    def _usage_json(self) -> str:
        return ',"usage":' + self.usage().model_dump_json()

    def usage_event(self) -> bytes:
        """The last chunk before [DONE] when include_usage is set: no choices, the request's usage."""
        head = {"id": self.request_id, "object": self.object_name, "created": self.created, "model": self.model}
        return ("data: " + _dumps({**head, "choices": [], "usage": self.usage().model_dump()}) + "\n\n").encode()

    def start(self) -> bytes:
        """Events before the first token (none for completions)."""
        return b""

    def _token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _delta(self, text: str) -> str:
        raise NotImplementedError

    def _chunk_logprobs(self, state: ChoiceState, out: RequestOutput) -> str:
        raise NotImplementedError

    def body(self) -> bytes:
        raise NotImplementedError


class CompletionAnswer(Answer):
    object_name = "text_completion"

    def start(self) -> bytes:
        if not self.plan.echo:  # echo: each choice's prompt text comes first
            return b""
        events = []
        for job, state in zip(self.plan.jobs, self.choices):
            text = self.plan.echo[job.prompt_index]
            state.num_chars += len(text)
            events.append(f"{self._head}{job.index},{self._delta(text)},\"logprobs\":null,"
                          f"\"finish_reason\":null}}]{self._usage_tail}\n\n")
        return "".join(events).encode()

    def _delta(self, text: str) -> str:
        return '"text":' + _dumps(text)

    def _logprobs(self, pairs: list[tuple[int, TokenLogprobs]], offset: int) -> CompletionLogprobs:
        tokens = [self._token(t) for t, _ in pairs]
        offsets = []
        for tok in tokens:
            offsets.append(offset)
            offset += len(tok)
        return CompletionLogprobs(
            tokens=tokens, token_logprobs=[lp.logprob for _, lp in pairs],
            top_logprobs=[{self._token(t): v for t, v in lp.top} for _, lp in pairs], text_offset=offsets)

    def _chunk_logprobs(self, state: ChoiceState, out: RequestOutput) -> str:
        return self._logprobs(list(zip(out.new_token_ids, out.logprobs)), state.num_chars).model_dump_json()

    def body(self) -> bytes:
        choices = []
        for job, state in zip(self.plan.jobs, self.choices):
            prefix = self.plan.echo[job.prompt_index] if self.plan.echo else ""
            lp = self._logprobs(state.logprobs, len(prefix)) if self.plan.num_top_logprobs is not None else None
            choices.append(CompletionChoice(index=job.index, text=prefix + "".join(state.texts), logprobs=lp,
                                            finish_reason=state.finish_reason))
        return CompletionResponse(id=self.request_id, created=self.created, model=self.model, choices=choices,
                                  usage=self.usage()).model_dump_json().encode()


class ChatAnswer(Answer):
    object_name = "chat.completion.chunk"

    def start(self) -> bytes:
        """The role of each choice comes first, as OpenAI streams it."""
        return "".join(f"{self._head}{job.index},\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},"
                       f"\"logprobs\":null,\"finish_reason\":null}}]{self._usage_tail}\n\n"
                       for job in self.plan.jobs).encode()

    def _delta(self, text: str) -> str:
        return '"delta":{"content":' + _dumps(text) + "}" if text else '"delta":{}'

    def _content(self, pairs: list[tuple[int, TokenLogprobs]]) -> list[dict]:
        def entry(token_id: int, logprob: float) -> dict:
            text = self._token(token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        return [{**entry(t, lp.logprob), "top_logprobs": [entry(i, v) for i, v in lp.top]} for t, lp in pairs]

    def _chunk_logprobs(self, state: ChoiceState, out: RequestOutput) -> str:
        return _dumps({"content": self._content(list(zip(out.new_token_ids, out.logprobs)))})

    def body(self) -> bytes:
        choices = []
        for job, state in zip(self.plan.jobs, self.choices):
            lp = ChatLogprobs(content=self._content(state.logprobs)) if self.plan.num_top_logprobs is not None \
                else None
            choices.append(ChatChoice(index=job.index, message=AssistantMessage(content="".join(state.texts)),
                                      logprobs=lp, finish_reason=state.finish_reason))
        return ChatCompletionResponse(id=self.request_id, created=self.created, model=self.model, choices=choices,
                                      usage=self.usage()).model_dump_json().encode()
