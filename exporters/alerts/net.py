"""Alerts on the serving interfaces: microburst rate and TCP retransmit ratio."""
from __future__ import annotations

from gpusleuth.exporters.alerts.model import Alert, Group, num
from gpusleuth.exporters.alerts.params import AlertParams


def group(p: AlertParams) -> Group:
    """The network group."""
    agent, w, ifaces = f'job="{p.agent_job}"', p.rate_window, p.serving_interfaces
    bursts = Alert(
        "GpusleuthNetMicrobursts",
        f'rate(gpusleuth_net_microbursts_total{{{agent}, interface=~"{ifaces}"}}[{w}]) * 60 > '
        f"{num(p.microbursts_per_minute)}", "10m", "warning",
        "Microbursts on {{ $labels.interface }} ({{ $labels.direction }}) of {{ $labels.instance }}",
        "{{ $value | humanize }} microbursts per minute on {{ $labels.interface }} {{ $labels.direction }} over "
        f"{w} (alert above {num(p.microbursts_per_minute)}): queues fill and requests or collectives wait.",
        "network")
    egress = (f'sum by (job, instance) (rate(gpusleuth_net_packets_total{{{agent}, interface=~"{ifaces}", '
              f'direction="egress"}}[{w}]))')
    retrans = f"sum by (job, instance) (rate(gpusleuth_net_tcp_retransmit_segments_total{{{agent}}}[{w}]))"
    ratio = Alert(
        "GpusleuthNetRetransmitRatio",
        f"({retrans} / {egress} > {num(p.retransmit_ratio)}) and on (job, instance) "
        f"({egress} > {num(p.min_packets_per_second)})", "10m", "warning",
        "TCP retransmits on {{ $labels.instance }}",
        "{{ $value | humanizePercentage }} of the packets sent on the serving interfaces were TCP retransmits "
        f"over {w} (alert above {num(p.retransmit_ratio * 100)} %): loss on the path, drops in a queue.",
        "network")
    return Group("net", (bursts, ratio))
