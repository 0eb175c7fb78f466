"""Alerts on the agent itself: its target down or gone, probes not ok, span datagrams rejected, store drops."""
from __future__ import annotations

from gpusleuth.exporters.alerts.model import Alert, Group
from gpusleuth.exporters.alerts.params import AlertParams


def group(p: AlertParams) -> Group:
    """The agent group."""
    agent, w = f'job="{p.agent_job}"', p.rate_window
    rules = (
        Alert("GpusleuthAgentDown", f"up{{{agent}}} == 0", "2m", "critical",
              "gpusleuth agent {{ $labels.instance }} does not answer its scrape",
              "Prometheus could not scrape the agent at {{ $labels.instance }} (up = {{ $value }}): the host's "
              "kernel, GPU and engine are not observed.", "agent-down"),
        Alert("GpusleuthAgentAbsent", f"absent(up{{{agent}}})", "10m", "warning",
              f"No gpusleuth agent target in job {p.agent_job}",
              f"Prometheus has no target of job {p.agent_job} at all (value {{{{ $value }}}}): service discovery "
              "lost the agents (DaemonSet deleted, PodMonitor selector wrong).", "agent-down"),
        Alert("GpusleuthProbeDegraded", f'gpusleuth_probe_state{{{agent}, state="degraded"}} == 1', "10m",
              "warning", "Probe {{ $labels.probe }} degraded on {{ $labels.instance }}",
              "The {{ $labels.probe }} probe has been degraded for 10 minutes (state value {{ $value }}): it runs "
              "but loses detail; `agent status` gives the reason.", "probe-health"),
        Alert("GpusleuthProbeUnavailable",
              f'gpusleuth_probe_state{{{agent}, state=~"unavailable|stopped"}} == 1', "10m", "warning",
              "Probe {{ $labels.probe }} {{ $labels.state }} on {{ $labels.instance }}",
              "The {{ $labels.probe }} probe has been {{ $labels.state }} for 10 minutes (value {{ $value }}): "
              "its source is not observed; `agent status` and `agent probes` give the reason.", "probe-health"),
        Alert("GpusleuthSpansRejected",
              f"sum by (job, instance, reason) (rate(gpusleuth_span_datagrams_rejected_total{{{agent}}}[{w}])) > 0",
              "10m", "warning", "The agent on {{ $labels.instance }} rejects engine spans ({{ $labels.reason }})",
              f"{{{{ $value | humanize }}}} span datagrams per second rejected ({{{{ $labels.reason }}}}) over {w}: "
              "requests from these spans are missing from `agent explain`.", "span-drops"),
        Alert("GpusleuthStoreDrops",
              f"sum by (job, instance, kind) (rate(gpusleuth_store_dropped_total{{{agent}}}[{w}])) > 0", "10m",
              "warning", "The agent on {{ $labels.instance }} drops {{ $labels.kind }} before recording them",
              f"{{{{ $value | humanize }}}} {{{{ $labels.kind }}}} per second evicted from the in-memory store before "
              f"the recorder wrote them (over {w}): the recording has holes.", "store-drops"),
    )
    return Group("agent", rules)
