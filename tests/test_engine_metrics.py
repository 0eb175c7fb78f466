"""The engine's /metrics schema stays vLLM's (names, types, labels, buckets), so vLLM dashboards keep working;
the gpusleuth_engine_* series sit beside it.
"""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families as parse_text

from engine_helpers import make_engine
from gpusleuth.engine.sequence import SamplingParams

PARAMS = SamplingParams(max_tokens=6, temperature=0.0, is_ignore_eos=True)

# vLLM's bucket bounds, written out here so a change in engine/metrics.py shows up as a failure
LATENCY = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
           80.0, 160.0, 640.0)
ITL = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
       1.0, 2.5, 5.0)
TOKENS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
MODEL = ("model_name",)

# family name -> (type, label names, bucket bounds or None)
SCHEMA = {
    "vllm:time_to_first_token_seconds": ("histogram", MODEL, LATENCY),
    "vllm:inter_token_latency_seconds": ("histogram", MODEL, ITL),
    "vllm:time_per_output_token_seconds": ("histogram", MODEL, ITL),
    "vllm:request_time_per_output_token_seconds": ("histogram", MODEL, ITL),
    "vllm:request_max_num_generation_tokens": ("histogram", MODEL, TOKENS),
    "vllm:gpu_cache_usage_perc": ("gauge", MODEL, None),
    "vllm:e2e_request_latency_seconds": ("histogram", MODEL, LATENCY),
    "vllm:request_queue_time_seconds": ("histogram", MODEL, LATENCY),
    "vllm:request_prefill_time_seconds": ("histogram", MODEL, LATENCY),
    "vllm:request_decode_time_seconds": ("histogram", MODEL, LATENCY),
    "vllm:request_inference_time_seconds": ("histogram", MODEL, LATENCY),
    "vllm:request_prompt_tokens": ("histogram", MODEL, TOKENS),
    "vllm:request_generation_tokens": ("histogram", MODEL, TOKENS),
    "vllm:iteration_tokens_total": ("histogram", MODEL, TOKENS),
    "vllm:prompt_tokens": ("counter", MODEL, None),
    "vllm:generation_tokens": ("counter", MODEL, None),
    "vllm:num_preemptions": ("counter", MODEL, None),
    "vllm:request_success": ("counter", ("finished_reason", "model_name"), None),
    "vllm:num_requests_running": ("gauge", MODEL, None),
    "vllm:num_requests_waiting": ("gauge", MODEL, None),
    "vllm:kv_cache_usage_perc": ("gauge", MODEL, None),
    "gpusleuth_engine_requests_rejected": ("counter", ("reason",), None),
    "gpusleuth_engine_spans_sent": ("counter", (), None),
    "gpusleuth_engine_spans_dropped": ("counter", (), None),
    "gpusleuth_engine_span_drops": ("counter", ("reason",), None),
    "gpusleuth_engine_spans_deferred": ("counter", (), None),
    "gpusleuth_engine_kernels_info": ("gauge", ("kernels",), None),
}


def _schema(families) -> dict:
    got = {}
    for fam in families:
        if fam.name.endswith("_created"):  # the text parser shows prometheus_client's _created series as gauges
            continue
        labels = tuple(sorted({k for s in fam.samples for k in s.labels if k != "le"}))
        bounds = [float(s.labels["le"]) for s in fam.samples if s.name.endswith("_bucket")]
        buckets = tuple(b for b in bounds if b != float("inf")) if fam.type == "histogram" else None
        got[fam.name] = (fam.type, labels, buckets)
    return got


def _served_engine():
    engine = make_engine()
    engine.generate([engine.tokenizer.encode("metrics")], PARAMS)
    engine.metrics.rejected.labels("queue_full").inc()  # a labelled counter shows its labels once it has a child
    return engine


def test_text_exposition_keeps_vllm_schema():
    engine = _served_engine()
    text = engine.metrics.render().decode()
    got = _schema(parse_text(text))
    assert set(got) == set(SCHEMA)
    for name, want in SCHEMA.items():
        assert got[name] == (want[0], tuple(sorted(want[1])), want[2]), name
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in parse_text(text) for s in fam.samples}
    assert values[("vllm:generation_tokens_total", (("model_name", "tiny"),))] == PARAMS.max_tokens
    assert values[("vllm:request_success_total", (("finished_reason", "length"), ("model_name", "tiny")))] == 1



def test_tpot_is_per_token_as_vllm_and_the_old_names_are_there():
    engine = _served_engine()  # one request of PARAMS.max_tokens tokens
    text = engine.metrics.render().decode()
    values = {s.name: s.value for fam in parse_text(text) for s in fam.samples if not s.labels.get("le")}
    assert values["vllm:time_per_output_token_seconds_count"] == PARAMS.max_tokens - 1  # every token after the first
    assert values["vllm:inter_token_latency_seconds_count"] == PARAMS.max_tokens - 1
    assert values["vllm:request_time_per_output_token_seconds_count"] == 1  # the per-request mean
    assert values["vllm:request_max_num_generation_tokens_sum"] == PARAMS.max_tokens
    assert values["vllm:gpu_cache_usage_perc"] == values["vllm:kv_cache_usage_perc"]
