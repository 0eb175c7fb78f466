"""The Grafana dashboard (exporters/grafana/gpusleuth.json) as data: rows of panels, each a list of PromQL targets,
and the template variables instance (the agent's hosts), gpu and engine (the engine's scrape targets).

Written out by `python -m gpusleuth.exporters.grafana`; tests/test_alerts_e2e.py runs every query against a real
Prometheus scraping a real agent and engine. Queries of series that exist only while something is wrong (open
incidents, retransmits by peer) end in `or vector(0)`, so a healthy host shows 0 rather than "No data".
"""
from __future__ import annotations

from typing import Any

I, G, E = 'instance=~"$instance"', 'instance=~"$instance", gpu=~"$gpu"', 'instance=~"$engine"'
RI = "$__rate_interval"


def q(expr: str, legend: str = "") -> dict[str, str]:
    return {"expr": expr, "legend": legend}


def quantiles(hist: str, sel: str, by: str = "") -> list[dict[str, str]]:
    group = f"le{', ' + by if by else ''}"
    return [q(f"histogram_quantile({p}, sum by ({group}) (rate({hist}_bucket{{{sel}}}[{RI}])))",
              f"p{int(p * 100)}" + (f" {{{{{by}}}}}" if by else "")) for p in (0.5, 0.99)]


# (row title, [(panel title, panel type, unit, targets)])
ROWS: list[tuple[str, list[tuple[str, str, str, list[dict[str, str]]]]]] = [
    ("Host overview", [
        ("Agent uptime", "stat", "s", [q(f"gpusleuth_agent_uptime_seconds{{{I}}}", "{{instance}}")]),
        ("Open incidents", "stat", "none", [q(f"count(gpusleuth_incident_active{{{I}}}) or vector(0)", "open")]),
        ("Firing alerts", "stat", "none", [q('count(ALERTS{alertstate="firing", alertname=~"Gpusleuth.*"}) '
                                             "or vector(0)", "firing")]),
        ("Probe states", "table", "none", [q(f"gpusleuth_probe_state{{{I}}} == 1", "{{probe}} {{state}}")]),
        ("Agent memory", "timeseries", "bytes", [q(f"gpusleuth_agent_resident_memory_bytes{{{I}}}", "RSS"),
                                                 q(f"gpusleuth_store_bytes{{{I}}}", "store")]),
        ("Store drops and span rejects", "timeseries", "ops", [
            q(f"sum by (kind) (rate(gpusleuth_store_dropped_total{{{I}}}[{RI}]))", "store {{kind}}"),
            q(f"sum by (reason) (rate(gpusleuth_span_datagrams_rejected_total{{{I}}}[{RI}]))", "spans {{reason}}")]),
    ]),
    ("Engine requests", [
        ("TTFT", "timeseries", "s", quantiles("vllm:time_to_first_token_seconds", E)),
        ("Inter-token latency", "timeseries", "s", quantiles("vllm:inter_token_latency_seconds", E)),
        ("Requests finished", "timeseries", "reqps", [
            q(f"sum by (finished_reason) (rate(vllm:request_success_total{{{E}}}[{RI}]))", "{{finished_reason}}")]),
        ("Running / waiting", "timeseries", "none", [q(f"sum(vllm:num_requests_running{{{E}}})", "running"),
                                                     q(f"sum(vllm:num_requests_waiting{{{E}}})", "waiting"),
                                                     q(f"sum(gpusleuth_requests_in_flight{{{I}}})", "in flight")]),
        ("KV-cache usage", "timeseries", "percentunit", [q(f"max(vllm:kv_cache_usage_perc{{{E}}})", "KV")]),
        ("SLO error ratio (5 min)", "timeseries", "percentunit", [
            q(f"max(gpusleuth:ttft_slo_errors:ratio_rate5m{{{E}}})", "TTFT"),
            q(f"max(gpusleuth:itl_slo_errors:ratio_rate5m{{{E}}})", "ITL")]),
    ]),
    ("Incidents", [
        ("Open incidents by cause", "state-timeline", "none", [
            q(f"sum by (cause) (gpusleuth_incident_active{{{I}}}) or vector(0)", "{{cause}}")]),
        ("Incidents opened by cause", "timeseries", "none", [
            q(f"sum by (cause) (increase(gpusleuth_incidents_total{{{I}}}[{RI}])) or vector(0)", "{{cause}}")]),
    ]),
    ("GPUs", [
        ("GPU utilisation", "timeseries", "percent", [q(f"DCGM_FI_DEV_GPU_UTIL{{{G}}}", "GPU {{gpu}}")]),
        ("SM clock", "timeseries", "MHz", [q(f"DCGM_FI_DEV_SM_CLOCK{{{G}}}", "GPU {{gpu}}")]),
        ("Power", "timeseries", "watt", [q(f"DCGM_FI_DEV_POWER_USAGE{{{G}}}", "GPU {{gpu}}")]),
        ("Temperature", "timeseries", "celsius", [q(f"DCGM_FI_DEV_GPU_TEMP{{{G}}}", "GPU {{gpu}}")]),
        ("Memory used", "timeseries", "decmbytes", [q(f"DCGM_FI_DEV_FB_USED{{{G}}}", "GPU {{gpu}}")]),
        ("Throttled", "state-timeline", "none", [q(f"gpusleuth_gpu_throttled{{{G}}}", "GPU {{gpu}}")]),
        ("XIDs (since agent start)", "timeseries", "none", [
            q(f"sum by (gpu, xid, name) (gpusleuth_gpu_xid_errors_total{{{G}}}) or vector(0)", "GPU {{gpu}} {{xid}}")]),
        ("GPU memory by process", "timeseries", "bytes", [
            q(f"gpusleuth_gpu_process_memory_used_bytes{{{G}}}", "GPU {{gpu}} {{comm}} ({{pid}})")]),
    ]),
    ("Network", [
        ("Traffic", "timeseries", "Bps", [
            q(f"sum by (interface, direction) (rate(gpusleuth_net_bytes_total{{{I}}}[{RI}]))",
              "{{interface}} {{direction}}")]),
        ("Microbursts", "timeseries", "ops", [
            q(f"sum by (interface, direction) (rate(gpusleuth_net_microbursts_total{{{I}}}[{RI}]))",
              "{{interface}} {{direction}}")]),
        ("TCP retransmits", "timeseries", "ops", [
            q(f"sum(rate(gpusleuth_net_tcp_retransmit_segments_total{{{I}}}[{RI}])) or vector(0)", "segments")]),
        ("Qdisc backlog", "timeseries", "bytes", [
            q(f"gpusleuth_net_qdisc_backlog_bytes{{{I}}}", "{{interface}} {{qdisc}}")]),
    ]),
    ("Kernel latency", [
        ("Run-queue latency of watched processes", "timeseries", "s",
         quantiles("gpusleuth_runqueue_latency_seconds", I, "comm")),
        ("Threads waiting runnable (share of time)", "timeseries", "percentunit", [
            q(f"topk(5, rate(gpusleuth_thread_runqueue_seconds_total{{{I}}}[{RI}]))", "{{comm}} {{tid}}")]),
        ("I/O syscall latency p99", "timeseries", "s", [
            q("histogram_quantile(0.99, sum by (le, syscall) (rate(gpusleuth_syscall_latency_seconds_bucket"
              f'{{{I}, syscall=~"read|write|pread64|pwrite64|openat|fsync|fdatasync"}}[{RI}])))', "{{syscall}}")]),
        ("Run-queue waits over the threshold", "timeseries", "ops", [
            q(f"sum(rate(gpusleuth_runqueue_delays_total{{{I}}}[{RI}]))", "delays")]),
    ]),
]


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query, "refresh": 2, "includeAll": True,
            "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1}


def _panel(pid: int, title: str, kind: str, unit: str, targets: list[dict[str, str]], x: int, y: int) -> dict:
    width = 8 if kind == "stat" else 12
    return {"id": pid, "title": title, "type": kind, "gridPos": {"h": 4 if kind == "stat" else 8, "w": width,
                                                                  "x": x, "y": y},
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + i), "expr": t["expr"], "legendFormat": t["legend"],
                         "datasource": {"type": "prometheus", "uid": "${datasource}"}} for i, t in enumerate(targets)]}


def panels() -> list[dict[str, Any]]:
    """The rows and their panels, laid out on Grafana's 24-column grid."""
    out, pid, y = [], 1, 0
    for title, row in ROWS:
        out.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x = pid + 1, y + 1, 0
        for p in row:
            panel = _panel(pid, *p, x=x, y=y)
            out.append(panel)
            pid, x = pid + 1, x + panel["gridPos"]["w"]
            if x >= 24:
                x, y = 0, y + panel["gridPos"]["h"]
        y += 8 if x else 0
    return out


def dashboard() -> dict[str, Any]:
    """The dashboard's JSON model."""
    variables = [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0},
        _variable("instance", "agent", "label_values(gpusleuth_agent_uptime_seconds, instance)"),
        _variable("gpu", "GPU", 'label_values(DCGM_FI_DEV_GPU_UTIL{instance=~"$instance"}, gpu)'),
        _variable("engine", "engine", "label_values(vllm:num_requests_running, instance)"),
    ]
    return {"title": "gpusleuth", "uid": "gpusleuth", "tags": ["gpusleuth", "gpu", "llm-inference"],
            "timezone": "browser", "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"}, "templating": {"list": variables},
            "annotations": {"list": [{"name": "Alerts", "datasource": {"type": "prometheus", "uid": "${datasource}"},
                                      "enable": True, "expr": 'ALERTS{alertstate="firing", alertname=~"Gpusleuth.*"}',
                                      "iconColor": "red", "titleFormat": "{{alertname}}", "step": "30s"}]},
            "panels": panels()}


def targets(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in a dashboard model: its panels' targets and its variables' queries."""
    out = [(p["title"], t["expr"]) for p in model["panels"] for t in p.get("targets", [])]
    out += [(f"variable {v['name']}", v["definition"]) for v in model["templating"]["list"] if "definition" in v]
    return out
