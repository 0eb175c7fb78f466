"""Alerts on the engine: its scrape target down, requests in flight while no span arrives, spans dropped."""
from __future__ import annotations

from gpusleuth.exporters.alerts.model import Alert, Group, num
from gpusleuth.exporters.alerts.params import AlertParams


def group(p: AlertParams) -> Group:
    """The engine group: scrape health and the engine -> agent span path."""
    engine, agent, w = f'job="{p.engine_job}"', f'job="{p.agent_job}"', p.rate_window
    down = Alert(
        "GpusleuthEngineDown", f"up{{{engine}}} == 0", "1m", "critical",
        "Inference engine {{ $labels.instance }} does not answer its scrape",
        "Prometheus could not scrape the engine's /metrics at {{ $labels.instance }} (up = {{ $value }}): the "
        "process is gone, stopped (SIGSTOP, a debugger) or its HTTP server is stuck.", "engine-down")
    spans = f"sum by (job, instance) (rate(gpusleuth_spans_received_total{{{agent}}}[{p.stall_window}]))"
    no_spans = Alert(
        "GpusleuthEngineNoSpans",
        f"sum by (job, instance) (gpusleuth_requests_in_flight{{{agent}}}) > 0 unless on (job, instance) "
        f"({spans} > 0)", "1m", "critical",
        "Requests are in flight but no engine sends spans to the agent on {{ $labels.instance }}",
        f"{{{{ $value }}}} requests are in flight and the agent received no span for {p.stall_window} (the engine "
        "sends a heartbeat every 0.5 s): the engine is frozen, or its span socket changed.", "engine-down")
    sent = f"rate(gpusleuth_engine_spans_sent_total{{{engine}}}[{w}])"
    dropped = f"rate(gpusleuth_engine_spans_dropped_total{{{engine}}}[{w}])"
    drops = Alert(
        "GpusleuthEngineSpansDropped",
        f"{dropped} / ({sent} + {dropped}) > {num(p.span_drop_ratio)}", "10m", "warning",
        "Engine {{ $labels.instance }} drops its spans",
        f"{{{{ $value | humanizePercentage }}}} of the engine's spans were dropped over {w} (no agent listening "
        "on the span socket, or the socket buffer full): the agent cannot explain these requests.", "span-drops")
    return Group("engine", (down, no_spans, drops))
