"""One OTLP request span of a GenAI server (vLLM's `llm_request`) -> the request phases of the diagnosis contract.

vLLM (vllm/tracing/utils.py `SpanAttributes`, vllm/v1/engine/output_processor.py `do_tracing`) sends one SERVER
span per finished request: it starts at the request's arrival (wall clock) and ends when the frontend has processed
the last output. Its attributes are durations in seconds: `gen_ai.latency.time_to_first_token` (from arrival),
`time_in_queue` (queued -> first scheduled), `time_in_model_prefill` (first scheduled -> first token),
`time_in_model_decode` (first token -> last token) and `e2e` (arrival -> end). No step spans.

The phases tile the span: `received` [arrival, queued] is what TTFT holds beyond queue and prefill (input
processing, frontend -> engine core), then `queued`, `prefill`, `decode` as vLLM measured them, then `stream`
[last token, span end] (the frontend's last output processing), and `finished` at the end with TTFT, TPOT and e2e.
A span with neither TTFT nor queue/prefill/decode times cannot be split into phases and is not a request here.
"""
from __future__ import annotations

from typing import Any, Mapping

from gpusleuth.probes.spans.wire import Span

# vLLM's attribute names (vllm/tracing/utils.py SpanAttributes; the first six follow the GenAI conventions)
REQUEST_ID = "gen_ai.request.id"
PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"
COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"
RESPONSE_MODEL = "gen_ai.response.model"
REQUEST_MODEL = "gen_ai.request.model"
MAX_TOKENS = "gen_ai.request.max_tokens"
TTFT = "gen_ai.latency.time_to_first_token"
E2E = "gen_ai.latency.e2e"
QUEUE = "gen_ai.latency.time_in_queue"
PREFILL = "gen_ai.latency.time_in_model_prefill"
DECODE = "gen_ai.latency.time_in_model_decode"
INFERENCE = "gen_ai.latency.time_in_model_inference"
REQUEST_SPAN_NAMES = ("llm_request",)
STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


def is_request_span(name: str, attrs: Mapping[str, Any]) -> bool:
    """A span that stands for one inference request (vLLM's, or one carrying GenAI latency attributes)."""
    return name in REQUEST_SPAN_NAMES or REQUEST_ID in attrs or any(k.startswith("gen_ai.latency.") for k in attrs)


def _seconds(attrs: Mapping[str, Any], key: str) -> float | None:
    value = attrs.get(key)
    try:
        return None if value is None else max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def _int(attrs: Mapping[str, Any], key: str) -> int:
    try:
        return max(0, int(attrs.get(key) or 0))
    except (TypeError, ValueError):
        return 0


def _tiles(start: int, end: int, attrs: Mapping[str, Any]) -> list[tuple[str, int, int]] | None:
    """(phase, start_ns, end_ns) tiling [start, end] from the latency attributes; None if they say too little."""
    ttft, queue, prefill, decode = (_seconds(attrs, k) for k in (TTFT, QUEUE, PREFILL, DECODE))
    if ttft is None and queue is None and prefill is None:
        return None
    if ttft is None:
        ttft = (queue or 0.0) + (prefill or 0.0)
    if queue is None and prefill is None:  # only TTFT: all of it counts as prefill, nothing as queue
        queue, prefill = 0.0, ttft
    queue, prefill = queue or 0.0, prefill or 0.0
    durations = [("received", max(0.0, ttft - queue - prefill)), ("queued", queue), ("prefill", prefill)]
    t_first = start + int(ttft * 1e9)
    decode_s = decode if decode is not None else max(0.0, (end - t_first) / 1e9)
    durations += [("decode", decode_s)]
    out, t = [], start
    for phase, seconds in durations:
        hi = min(end, t + int(seconds * 1e9))  # the frontend's and the engine's clocks differ a little
        out.append((phase, t, hi))
        t = hi
    if end > t:
        out.append(("stream", t, end))
    return out


def request_spans(name: str, attrs: Mapping[str, Any], start_ns: int, end_ns: int, status_code: int = 0,
                  extra: Mapping[str, Any] | None = None) -> list[Span] | None:
    """The wire spans (probes/spans/wire.py) of one finished request whose OTLP span ran [start_ns, end_ns] on the
    agent's clock, or None when the span is no request or says too little to split. `extra` goes into the
    finished span's attributes (trace and span ids, model, source)."""
    if not is_request_span(name, attrs):
        return None
    end_ns = max(end_ns, start_ns)
    tiles = _tiles(start_ns, end_ns, attrs)
    if tiles is None:
        return None
    rid = str(attrs.get(REQUEST_ID) or (extra or {}).get("span_id") or f"otlp-{start_ns}")
    prompt, completion = _int(attrs, PROMPT_TOKENS), _int(attrs, COMPLETION_TOKENS)
    tokens = {"queued": prompt, "prefill": prompt, "decode": max(0, completion - 1)}
    out = [Span("request", phase, rid, 0, lo, hi, tokens=tokens.get(phase, 0), attrs={"source": "otlp"})
           for phase, lo, hi in tiles]
    ttft = _seconds(attrs, TTFT)
    decode = next((hi - lo for phase, lo, hi in tiles if phase == "decode"), 0) / 1e9
    e2e = _seconds(attrs, E2E)
    model = attrs.get(RESPONSE_MODEL) or attrs.get(REQUEST_MODEL)
    finish = {"ttft_s": ttft if ttft is not None else (tiles[-1][1] - start_ns) / 1e9,
              "tpot_s": decode / (completion - 1) if completion > 1 else None,
              "e2e_s": e2e if e2e is not None else (end_ns - start_ns) / 1e9,
              "status": "error" if status_code == STATUS_ERROR else "ok", "num_preemptions": 0,
              **({"model": str(model)} if model else {}), **(extra or {})}
    out.append(Span("request", "finished", rid, 0, end_ns, end_ns, tokens=completion, attrs=finish))
    return out
