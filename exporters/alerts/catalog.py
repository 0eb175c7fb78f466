"""The metric names the agent's and the engine's /metrics serve, with their types: the vocabulary the alert rules,
the runbooks' PromQL checks and the dashboard may use (checked against a live scrape in tests/test_alerts_e2e.py).

A name here is a family name; `sample_names()` expands it to what a query can select (histograms' _bucket, _sum,
_count; counters' _total and, for prometheus_client's own Counters and Histograms, _created).
"""
from __future__ import annotations

from gpusleuth.exporters.dcgm import DEVICE_METRICS, PROF_METRICS

G, C, H = "gauge", "counter", "histogram"

AGENT: dict[str, str] = {
    # agent health (exporters/health.py)
    "gpusleuth_agent_uptime_seconds": G, "gpusleuth_agent_resident_memory_bytes": G, "gpusleuth_probe_state": G,
    "gpusleuth_probe_polls": C, "gpusleuth_probe_poll_errors": C, "gpusleuth_probe_poll_duration_seconds": G,
    "gpusleuth_probe_event_lateness_seconds": G, "gpusleuth_exporter_series_over_budget": G,
    "gpusleuth_store_records": G, "gpusleuth_store_capacity_records": G, "gpusleuth_store_dropped": C,
    "gpusleuth_store_bytes": G, "gpusleuth_recorder_bytes": G, "gpusleuth_recorder_flushes": C,
    # kernel (exporters/syscalls.py, sched.py: threads, cgroups, stuck and frozen processes)
    "gpusleuth_syscall_latency_seconds": H, "gpusleuth_slow_syscalls": C, "gpusleuth_syscall_probe_lost": C,
    "gpusleuth_runqueue_latency_seconds": H, "gpusleuth_thread_offcpu_seconds": C,
    "gpusleuth_thread_runqueue_seconds": C, "gpusleuth_thread_switches": C, "gpusleuth_runqueue_delays": C,
    "gpusleuth_thread_stuck_seconds": G, "gpusleuth_thread_page_faults": C, "gpusleuth_thread_reclaim_seconds": C,
    "gpusleuth_cgroup_cpu_throttled_seconds": C, "gpusleuth_cgroup_cpu_throttled_periods": C,
    "gpusleuth_cgroup_cpu_quota_cpus": G, "gpusleuth_cgroup_memory_pressure_some_seconds": C,
    "gpusleuth_process_frozen": G, "gpusleuth_offcpu_events": C, "gpusleuth_reclaim_events": C,
    "gpusleuth_softirq_events": C, "gpusleuth_cgroup_throttle_events": C, "gpusleuth_runqueue_culprits_lost": C,
    # network (exporters/net.py)
    "gpusleuth_net_bytes": C, "gpusleuth_net_packets": C, "gpusleuth_net_microbursts": C,
    "gpusleuth_net_lost_bins": C, "gpusleuth_net_microburst_duration_seconds": H,
    "gpusleuth_net_microburst_peak_bytes_per_second": H, "gpusleuth_net_microburst_threshold_bytes_per_second": G,
    "gpusleuth_net_qdisc_backlog_bytes": G, "gpusleuth_net_qdisc_backlog_packets": G, "gpusleuth_net_qdisc_drops": C,
    "gpusleuth_net_qdisc_requeues": C, "gpusleuth_net_qdisc_overlimits": C,
    "gpusleuth_net_tcp_retransmit_segments": C, "gpusleuth_net_tcp_retransmit_segments_by_process": C,
    "gpusleuth_net_skb_drops": C, "gpusleuth_net_skb_drops_by_remote": C, "gpusleuth_net_skb_drops_by_process": C,
    # engine requests as the agent sees them (exporters/requests.py)
    **{f"gpusleuth_request_{m}_seconds": H for m in ("queue", "prefill", "decode", "ttft", "tpot", "e2e")},
    "gpusleuth_spans_received": C, "gpusleuth_span_datagrams_rejected": C, "gpusleuth_requests_in_flight": G,
    "gpusleuth_requests_evicted_in_flight": C,
    # GPU, our own series (exporters/gpu.py); the dcgm-compatible ones are added below
    "gpusleuth_gpu_lost": G, "gpusleuth_gpu_xid_errors": C, "gpusleuth_gpu_critical_events": C,
    "gpusleuth_gpu_clock_event_reason": G, "gpusleuth_gpu_throttled": G, "gpusleuth_gpu_performance_state": G,
    "gpusleuth_gpu_power_average_watts": G, "gpusleuth_gpu_row_remap_pending": G, "gpusleuth_gpu_mig_enabled": G,
    "gpusleuth_gpu_process_memory_used_bytes": G, "gpusleuth_gpu_process_sm_utilization_ratio": G,
    "gpusleuth_gpu_process_memory_utilization_ratio": G, "gpusleuth_gpu_xid_thread_running": G,
    "gpusleuth_gpu_xid_lost_waits": C,
    **{name: kind for name, kind, _, _ in DEVICE_METRICS + PROF_METRICS},
    # CUDA / NCCL uprobes and tensor-parallel stragglers (exporters/cuda.py)
    **{f"gpusleuth_cuda_{m}": C for m in (
        "kernel_launches", "graph_launches", "host_steps", "host_step_seconds", "host_step_sync_wait_seconds",
        "memcpy_bytes", "allocations", "allocated_bytes", "allocation_failures", "freed_bytes", "uprobes_refused",
        "probe_lost")},
    **{f"gpusleuth_cuda_{m}": H for m in ("sync_wait_seconds", "gpu_idle_gap_seconds", "memcpy_seconds")},
    **{f"gpusleuth_cuda_{m}": G for m in ("memcpy_bandwidth_bytes_per_second", "live_allocated_bytes",
                                          "library_attached", "uprobes")},
    "gpusleuth_collective_calls": C, "gpusleuth_collective_bytes": C, "gpusleuth_collective_call_seconds": H,
    "gpusleuth_tp_straggler_collectives": C, "gpusleuth_tp_straggler_wait_seconds": C,
    "gpusleuth_tp_rank_wait_seconds": C, "gpusleuth_tp_collectives_matched": C,
    "gpusleuth_tp_collectives_unmatched": C, "gpusleuth_tp_stragglers": C,
    # OTLP trace export (exporters/otlp_traces.py)
    "gpusleuth_otlp_export_spans": C, "gpusleuth_otlp_export_dropped_spans": C, "gpusleuth_otlp_export_queued_spans": G,
}
# The diagnosis' incidents (diagnosis contract §3).
INCIDENTS: dict[str, str] = {"gpusleuth_incidents": C, "gpusleuth_incident_active": G}
# The engine's /metrics (engine/metrics.py): vLLM's names, built with prometheus_client's own metric classes.
ENGINE: dict[str, str] = {
    **{f"vllm:{m}": H for m in (
        "time_to_first_token_seconds", "inter_token_latency_seconds", "time_per_output_token_seconds",
        "e2e_request_latency_seconds", "request_queue_time_seconds", "request_prefill_time_seconds",
        "request_decode_time_seconds", "request_inference_time_seconds", "request_prompt_tokens",
        "request_generation_tokens", "iteration_tokens_total", "request_time_per_output_token_seconds",
        "request_max_num_generation_tokens")},
    "vllm:prompt_tokens": C, "vllm:generation_tokens": C, "vllm:num_preemptions": C, "vllm:request_success": C,
    "gpusleuth_engine_requests_rejected": C, "vllm:num_requests_running": G, "vllm:num_requests_waiting": G,
    "vllm:kv_cache_usage_perc": G, "vllm:gpu_cache_usage_perc": G,
    "gpusleuth_engine_spans_sent": C, "gpusleuth_engine_spans_dropped": C, "gpusleuth_engine_kernels_info": G,
    "gpusleuth_engine_span_drops": C, "gpusleuth_engine_spans_deferred": C,
}
# What Prometheus itself adds to every target and keeps for alerts.
PROMETHEUS = ("up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE")

_CLIENT_CLASSES = {n for n, k in ENGINE.items() if k in (C, H) and not n.startswith("gpusleuth_engine_spans")}


def families() -> dict[str, str]:
    """Every family name the agent (diagnosis included) and the engine export -> its type."""
    return {**AGENT, **INCIDENTS, **ENGINE}


def _samples(name: str, kind: str) -> set[str]:
    if name.startswith("DCGM_"):  # dcgm-exporter's names carry no suffix, counters included
        return {name}
    if kind == H:
        out = {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    elif kind == C:
        out = {f"{name}_total"}
    else:
        return {name}
    return out | ({f"{name}_created"} if name in _CLIENT_CLASSES else set())


def sample_names(recorded: frozenset[str] = frozenset()) -> frozenset[str]:
    """Every series name a query may select: exported samples, Prometheus' own, and `recorded` (rule outputs)."""
    names = set(PROMETHEUS) | set(recorded)
    for name, kind in families().items():
        names |= _samples(name, kind)
    return frozenset(names)


def recorded_names() -> frozenset[str]:
    """The series the shipped recording rules write."""
    from gpusleuth.exporters.alerts.params import AlertParams  # noqa: PLC0415 - keeps the catalogue import light
    from gpusleuth.exporters.alerts.render import groups  # noqa: PLC0415

    return frozenset(r.record for g in groups(AlertParams()) for r in g.rules if hasattr(r, "record"))
