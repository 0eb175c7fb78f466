"""The inference engines discovery knows: how to recognise each one's process, where its Prometheus endpoint
usually is, and which of its metrics stand for queue depth, running requests, KV usage and the latency histograms.

Metric names are the engines' own (vLLM vllm/v1/metrics/loggers.py, SGLang sglang/srt/metrics/collector.py,
TGI router/src/server.rs, TensorRT-LLM trtllm-serve's /prometheus/metrics, Triton's nv_* metrics); where an engine
renamed one, both names are listed, newest first. KV usage is a fraction 0..1 everywhere here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

GAUGES = ("num_running", "num_waiting", "kv_usage")
HISTOGRAMS = ("ttft", "itl", "e2e")  # seconds: time to first token, inter-token latency, end to end


@dataclass(frozen=True, slots=True)
class EngineKind:
    name: str
    programs: tuple[str, ...]  # argv[0] basenames, or `python -m` modules / scripts in the command line
    port_flags: tuple[str, ...]  # flags whose value is the port serving metrics, in order of preference
    default_port: int
    paths: tuple[str, ...]  # metric paths to try on that port
    prefix: str  # every metric of the engine starts with it (how an endpoint is recognised as the engine's)
    gauges: dict[str, tuple[str, ...]] = field(default_factory=dict)  # GAUGES -> metric names
    histograms: dict[str, tuple[str, ...]] = field(default_factory=dict)  # HISTOGRAMS -> histogram names
    needs_subcommand: str = ""  # argv[1] must be this when argv[0] is the program (`vllm serve`)


KINDS: tuple[EngineKind, ...] = (
    EngineKind("vllm", ("vllm", "vllm.entrypoints.openai.api_server", "vllm.entrypoints.api_server"), ("--port",),
               8000, ("/metrics",), "vllm:",
               {"num_running": ("vllm:num_requests_running",), "num_waiting": ("vllm:num_requests_waiting",),
                "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")},
               {"ttft": ("vllm:time_to_first_token_seconds",),
                "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
                "e2e": ("vllm:e2e_request_latency_seconds",)}, needs_subcommand="serve"),
    EngineKind("sglang", ("sglang.launch_server", "sglang"), ("--port",), 30000, ("/metrics",), "sglang:",
               {"num_running": ("sglang:num_running_reqs",), "num_waiting": ("sglang:num_queue_reqs",),
                "kv_usage": ("sglang:token_usage",)},
               {"ttft": ("sglang:time_to_first_token_seconds",),
                "itl": ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
                "e2e": ("sglang:e2e_request_latency_seconds",)}),
    EngineKind("tgi", ("text-generation-router", "text-generation-launcher"), ("--prometheus-port",), 9000,
               ("/metrics",), "tgi_",
               {"num_running": ("tgi_batch_current_size",), "num_waiting": ("tgi_queue_size",)},
               {"itl": ("tgi_request_mean_time_per_token_duration",), "e2e": ("tgi_request_duration",)}),
    EngineKind("tensorrt-llm", ("trtllm-serve",), ("--port",), 8000, ("/prometheus/metrics", "/metrics"),
               "trtllm_", {"kv_usage": ("trtllm_kv_cache_utilization",)},
               {"ttft": ("trtllm_time_to_first_token_seconds",), "itl": ("trtllm_time_per_output_token_seconds",),
                "e2e": ("trtllm_e2e_request_latency_seconds",)}),
    EngineKind("triton", ("tritonserver",), ("--metrics-port",), 8002, ("/metrics",), "nv_",
               {"num_waiting": ("nv_inference_pending_request_count",)}, {}),
)
BY_NAME = {k.name: k for k in KINDS}


def _base(arg: str) -> str:
    return os.path.basename(arg)


def _program_at(cmdline: list[str], comm: str, prog: str) -> int | None:
    """Where `prog` is in the command line: argv[0], a script after `python [flag]`, or `-m prog`; -1 when only
    the comm names it; None when nothing does."""
    if _base(cmdline[0]) == prog:
        return 0
    if _base(cmdline[0]).startswith("python"):
        for i, arg in enumerate(cmdline[1:3], 1):
            if _base(arg) == prog or (arg == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] == prog):
                return i + (arg == "-m")
    return -1 if comm and comm == prog[:15] else None


def kind_of(cmdline: list[str], comm: str) -> EngineKind | None:
    """The engine a process runs, from its command line (argv[0], `python -m MODULE`, a script path) or comm."""
    cmdline = cmdline or [comm]
    for kind in KINDS:
        for prog in kind.programs:
            at = _program_at(cmdline, comm, prog)
            if at is None:
                continue
            if kind.needs_subcommand and prog == kind.name:  # `vllm serve`, not `vllm bench`
                sub = cmdline[at + 1] if 0 <= at < len(cmdline) - 1 else None
                if sub != kind.needs_subcommand and not (at == -1 and kind.needs_subcommand in cmdline):
                    continue
            return kind
    return None


def flag_value(cmdline: list[str], flag: str) -> str | None:
    """The value of `--flag VALUE` or `--flag=VALUE` (the last one given wins, as argparse does)."""
    found = None
    for i, arg in enumerate(cmdline):
        if arg == flag and i + 1 < len(cmdline):
            found = cmdline[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found
