"""Engine metrics under vLLM's names (so vLLM dashboards work) plus the engine's own span counters.

Histograms/counters are observed on the scheduler thread as requests progress; gauges are set after every step and
at once when a request is added or aborted (a client that left does not look running until the next step); span
counters are read from the SpanEmitter at scrape time by a custom collector (no duplicate bookkeeping).
`vllm:time_per_output_token_seconds` is observed per token, as vLLM does (the per-request mean is
`vllm:request_time_per_output_token_seconds`); `vllm:gpu_cache_usage_perc` is the name older vLLM dashboards query
for `vllm:kv_cache_usage_perc`.
"""
from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gpusleuth.engine.sequence import Sequence
from gpusleuth.engine.spans import SpanEmitter

_LATENCY = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
            40.0, 80.0, 160.0, 640.0)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
        0.75, 1.0, 2.5, 5.0)
_TOKENS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)


class _SpanCollector:
    def __init__(self, emitter: SpanEmitter, kernels: str) -> None:
        self.emitters, self.kernels = [emitter], kernels  # one per thread that sends spans

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("gpusleuth_engine_spans_sent", "Spans delivered to the agent socket",
                                  value=sum(e.num_sent for e in self.emitters))
        yield CounterMetricFamily("gpusleuth_engine_spans_dropped", "Spans dropped (no agent listening, or the "
                                  "backlog for a busy agent full)", value=sum(e.num_dropped for e in self.emitters))
        reasons = CounterMetricFamily("gpusleuth_engine_span_drops", "Spans dropped, by reason", labels=["reason"])
        for reason in ("no_agent", "backlog_full", "error"):
            reasons.add_metric([reason], sum(e.dropped_by_reason[reason] for e in self.emitters))
        yield reasons
        yield CounterMetricFamily("gpusleuth_engine_spans_deferred", "Spans that waited for a busy agent and were "
                                  "sent later", value=sum(e.num_deferred for e in self.emitters))
        info = GaugeMetricFamily("gpusleuth_engine_kernels_info", "Which op implementation runs (1 = active)",
                                 labels=["kernels"])
        info.add_metric([self.kernels], 1)
        yield info


class EngineMetrics:
    """The engine's metrics in one fresh registry (`registry`), which the server's /metrics exposes."""

    def __init__(self, model_name: str, emitter: SpanEmitter, kernels: str = "torch") -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        r, lab = self.registry, ["model_name"]

        def hist(name: str, doc: str, buckets) -> Histogram:
            return Histogram(name, doc, lab, buckets=buckets, registry=r).labels(model_name)

        self.ttft = hist("vllm:time_to_first_token_seconds", "Time to first token", _LATENCY)
        self.itl = hist("vllm:inter_token_latency_seconds", "Inter-token latency", _ITL)
        self.tpot = hist("vllm:time_per_output_token_seconds", "Time per output token (each token after the first)",
                         _ITL)
        self.request_tpot = hist("vllm:request_time_per_output_token_seconds",
                                 "Mean time per output token of a request", _ITL)
        self.max_tokens = hist("vllm:request_max_num_generation_tokens", "max_tokens asked for per request",
                               _TOKENS)
        self.e2e = hist("vllm:e2e_request_latency_seconds", "End-to-end request latency", _LATENCY)
        self.queue = hist("vllm:request_queue_time_seconds", "Time waiting before the first step", _LATENCY)
        self.prefill = hist("vllm:request_prefill_time_seconds", "First step to first token", _LATENCY)
        self.decode = hist("vllm:request_decode_time_seconds", "First token to last token", _LATENCY)
        self.inference = hist("vllm:request_inference_time_seconds", "First step to finish", _LATENCY)
        self.prompt_len = hist("vllm:request_prompt_tokens", "Prompt tokens per request", _TOKENS)
        self.output_len = hist("vllm:request_generation_tokens", "Generated tokens per request", _TOKENS)
        self.step_tokens = hist("vllm:iteration_tokens_total", "Tokens per engine step", _TOKENS)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefill tokens processed", lab, registry=r).labels(
            model_name)
        self.generation_tokens = Counter("vllm:generation_tokens", "Tokens generated", lab, registry=r).labels(
            model_name)
        self.preemptions = Counter("vllm:num_preemptions", "Preemptions (recompute)", lab, registry=r).labels(
            model_name)
        self._success = Counter("vllm:request_success", "Finished requests", lab + ["finished_reason"], registry=r)
        self.rejected = Counter("gpusleuth_engine_requests_rejected", "Requests refused by the server",
                                ["reason"], registry=r)
        self.running = Gauge("vllm:num_requests_running", "Requests in the running batch", lab, registry=r).labels(
            model_name)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting", lab, registry=r).labels(model_name)
        self.kv_usage = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage (0..1)", lab, registry=r).labels(
            model_name)
        self.kv_usage_alias = Gauge("vllm:gpu_cache_usage_perc", "KV-cache usage (0..1); older vLLM name", lab,
                                    registry=r).labels(model_name)
        self._spans = _SpanCollector(emitter, kernels)
        r.register(self._spans)

    def add_emitter(self, emitter: SpanEmitter) -> None:
        """Count another thread's span emitter in the span counters too."""
        self._spans.emitters.append(emitter)

    def on_step(self, num_tokens: int, num_running: int, num_waiting: int, kv_usage: float,
                num_preempted: int) -> None:
        """After a step: its token count and the scheduler's state at its end."""
        self.step_tokens.observe(num_tokens)
        self.set_state(num_running, num_waiting, kv_usage)
        if num_preempted:
            self.preemptions.inc(num_preempted)

    def set_state(self, num_running: int, num_waiting: int, kv_usage: float) -> None:
        """The scheduler's state now (after a step, an added or an aborted request)."""
        self.running.set(num_running)
        self.waiting.set(num_waiting)
        self.kv_usage.set(kv_usage)
        self.kv_usage_alias.set(kv_usage)

    def on_token(self, seq: Sequence, now_ns: int) -> None:
        """After `seq` got a token at `now_ns` (timestamps not yet advanced)."""
        if seq.num_output == 1:
            self.ttft.observe((now_ns - seq.arrival_ns) / 1e9)
        else:
            gap = (now_ns - seq.last_token_ns) / 1e9
            self.itl.observe(gap)
            self.tpot.observe(gap)

    def on_finish(self, seq: Sequence) -> None:
        """After `seq` finished (or was aborted): its latency and length histograms."""
        s = 1e-9
        reason = seq.finish_reason or "abort"
        self._success.labels(self.model_name, reason).inc()
        self.e2e.observe((seq.finished_ns - seq.arrival_ns) * s)
        self.prompt_len.observe(seq.num_prompt)
        self.output_len.observe(seq.num_output)
        self.max_tokens.observe(seq.params.max_tokens)
        if seq.scheduled_ns:
            self.queue.observe((seq.scheduled_ns - seq.arrival_ns) * s)
            self.inference.observe((seq.finished_ns - seq.scheduled_ns) * s)
        if seq.first_token_ns:
            self.prefill.observe((seq.first_token_ns - seq.scheduled_ns) * s)
            self.decode.observe((seq.last_token_ns - seq.first_token_ns) * s)
        if seq.num_output > 1:
            self.request_tpot.observe((seq.last_token_ns - seq.first_token_ns) * s / (seq.num_output - 1))

    def render(self) -> bytes:
        """The registry in Prometheus text format 0.0.4 (the server negotiates the format itself)."""
        return generate_latest(self.registry)
