"""From sampled tokens to what a client sees: stop conditions, detokenized text deltas, finish reasons."""
from __future__ import annotations

from dataclasses import dataclass

from gpusleuth.engine.sampler import TokenLogprobs
from gpusleuth.engine.sequence import Sequence
from gpusleuth.engine.tokenizer import IncrementalDetokenizer, Tokenizer


@dataclass(slots=True)
class FinishInfo:
    """A finished request's "finished" span, left to the HTTP server to send once the response is written."""

    end_ns: int  # when the engine finished it (start of the "stream" phase)
    attrs: dict  # ttft_s, tpot_s, e2e_s (to end_ns), status, num_preemptions


@dataclass(slots=True)
class RequestOutput:
    """One update of one request: the text and token ids new since the last update."""

    request_id: str
    delta_text: str
    new_token_ids: list[int]
    is_finished: bool
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int
    finish: FinishInfo | None = None  # on the last update, when the engine defers its "finished" span
    logprobs: list[TokenLogprobs] | None = None  # one per new token, when the request asked for logprobs
    error: str = ""  # finish_reason "error": why the engine failed this request (the others go on)


class OutputProcessor:
    """Per-request detokenizer state and stop checks (EOS, stop token ids, stop strings, max_tokens, context)."""

    def __init__(self, tokenizer: Tokenizer, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self._detok: dict[str, IncrementalDetokenizer] = {}
        self._num_sent_ids: dict[str, int] = {}

    def add(self, seq: Sequence) -> None:
        self._detok[seq.request_id] = IncrementalDetokenizer(self.tokenizer, seq.num_prompt)
        self._num_sent_ids[seq.request_id] = 0

    def stop_reason(self, seq: Sequence, token: int) -> str | None:
        """Why `seq` ends after appending `token` (already appended), or None; stop strings are checked later."""
        p = seq.params
        if (not p.is_ignore_eos and token in self.tokenizer.eos_token_ids) or token in p.stop_token_ids:
            return "stop"
        if seq.num_output >= p.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def update(self, seq: Sequence, reason: str | None) -> tuple[RequestOutput, str | None]:
        """The client-visible update for `seq` and the finish reason after stop-string matching."""
        rid = seq.request_id
        detok = self._detok[rid]
        delta = detok.delta(seq.token_ids, is_final=reason is not None)
        if seq.params.stop:
            delta, reason = _apply_stops(seq.text, detok.sent, len(delta), seq.params.stop, reason)
        seq.text += delta
        sent = self._num_sent_ids[rid]
        self._num_sent_ids[rid] = seq.num_output
        out = RequestOutput(rid, delta, seq.token_ids[seq.num_prompt + sent:], reason is not None, reason,
                            seq.num_prompt, seq.num_output)
        if reason is not None:
            self.drop(rid)
        return out, reason

    def aborted(self, seq: Sequence) -> RequestOutput:
        """The last update of a request that ended without a stop condition (abort, or "error" with seq.error)."""
        self.drop(seq.request_id)
        return RequestOutput(seq.request_id, "", [], True, seq.finish_reason or "abort", seq.num_prompt,
                             seq.num_output, error=seq.error)

    def drop(self, request_id: str) -> None:
        self._detok.pop(request_id, None)
        self._num_sent_ids.pop(request_id, None)


def _apply_stops(shown: str, decoded: str, num_new: int, stops: list[str],
                 reason: str | None) -> tuple[str, str | None]:
    """(text to show now, finish reason) given what was shown and everything decoded so far."""
    longest = max(map(len, stops))
    hit = _first_stop(decoded, stops, max(0, len(decoded) - num_new - longest))
    if hit is not None:
        return decoded[len(shown):hit], "stop"
    if reason is None:  # hold back a tail that could still become a stop string
        return decoded[len(shown): max(len(shown), len(decoded) - longest + 1)], None
    return decoded[len(shown):], reason


def _first_stop(text: str, stops: list[str], start: int) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None
