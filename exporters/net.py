"""Prometheus collector for the network probe's latest snapshot (store.snapshot("net"))."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from gpusleuth.exporters.base import SnapshotCollector
from gpusleuth.probes.net.snapshot import BoundedHist, InterfaceState, NetSnapshot, TcpSnapshot

IF_DIR = ["interface", "direction"]


def _buckets(hist: BoundedHist, scale: float = 1.0) -> list[tuple[str, float]]:
    """Cumulative [(le, count)] from the probe's per-bucket counts (last bucket = +Inf)."""
    out, running = [], 0
    for bound, count in zip(hist.bounds, hist.counts):
        running += count
        out.append((repr(bound * scale), float(running)))
    out.append(("+Inf", float(hist.count)))
    return out


def _pid_comm(key: str) -> list[str]:
    pid, _, comm = key.partition("/")
    return [pid, comm] if comm else ["0", key]


class NetCollector(SnapshotCollector):
    """Bytes/packets per interface and direction, microbursts, TCP retransmits and drops, qdisc backlog/drops."""

    source = "net"

    def metrics(self, snap: NetSnapshot) -> Iterator[Metric]:
        yield from self._traffic(snap.interfaces)
        yield from self._qdisc(snap.interfaces)
        if snap.tcp is not None:
            yield from self._tcp(snap.tcp)

    def _traffic(self, ifaces: dict[str, InterfaceState]) -> Iterable[Any]:
        nbytes = CounterMetricFamily("gpusleuth_net_bytes", "Bytes seen at the tc clsact hook", labels=IF_DIR)
        packets = CounterMetricFamily("gpusleuth_net_packets", "Packets (skbs) seen at the tc clsact hook",
                                      labels=IF_DIR)
        bursts = CounterMetricFamily("gpusleuth_net_microbursts", "Runs of time bins above the burst threshold",
                                     labels=IF_DIR)
        lost = CounterMetricFamily("gpusleuth_net_lost_bins", "Time bins overwritten before they were read (polls "
                                   "later than probes.net.ring_s)", labels=IF_DIR)
        duration = HistogramMetricFamily("gpusleuth_net_microburst_duration_seconds", "Microburst duration",
                                         labels=IF_DIR)
        peak = HistogramMetricFamily("gpusleuth_net_microburst_peak_bytes_per_second", "Microburst peak rate "
                                     "(busiest time bin)", labels=IF_DIR)
        threshold = GaugeMetricFamily("gpusleuth_net_microburst_threshold_bytes_per_second", "Rate above which a "
                                      "time bin counts towards a microburst", labels=["interface"])
        for name, iface in ifaces.items():
            threshold.add_metric([name], iface.threshold_bps / 8)
            for direction, d in iface.directions.items():
                labels = [name, direction]
                nbytes.add_metric(labels, d.bytes)
                packets.add_metric(labels, d.packets)
                bursts.add_metric(labels, d.bursts)
                lost.add_metric(labels, d.lost_bins)
                duration.add_metric(labels, _buckets(d.duration_seconds), d.duration_seconds.sum)
                peak.add_metric(labels, _buckets(d.peak_bps, 1 / 8), d.peak_bps.sum / 8)
        yield from (nbytes, packets, bursts, lost, duration, peak, threshold)

    def _qdisc(self, ifaces: dict[str, InterfaceState]) -> Iterable[Any]:
        backlog = GaugeMetricFamily("gpusleuth_net_qdisc_backlog_bytes", "Bytes queued in the root qdisc",
                                    labels=["interface", "qdisc"])
        qlen = GaugeMetricFamily("gpusleuth_net_qdisc_backlog_packets", "Packets queued in the root qdisc",
                                 labels=["interface", "qdisc"])
        drops = CounterMetricFamily("gpusleuth_net_qdisc_drops", "Packets the root qdisc dropped",
                                    labels=["interface", "qdisc"])
        requeues = CounterMetricFamily("gpusleuth_net_qdisc_requeues", "Packets the root qdisc requeued",
                                       labels=["interface", "qdisc"])
        overlimits = CounterMetricFamily("gpusleuth_net_qdisc_overlimits", "Root qdisc overlimit events",
                                         labels=["interface", "qdisc"])
        for name, iface in ifaces.items():
            q = iface.qdisc
            if q is None:
                continue
            labels = [name, q.kind]
            backlog.add_metric(labels, q.backlog_bytes)
            qlen.add_metric(labels, q.qlen)
            drops.add_metric(labels, q.drops)
            requeues.add_metric(labels, q.requeues)
            overlimits.add_metric(labels, q.overlimits)
        yield from (backlog, qlen, drops, requeues, overlimits)

    def _tcp(self, tcp: TcpSnapshot) -> Iterable[Any]:
        rt, dr = tcp.retransmits, tcp.drops
        by_remote = CounterMetricFamily("gpusleuth_net_tcp_retransmit_segments", "TCP segments retransmitted, by "
                                        "remote endpoint (host-wide)", labels=["remote"])
        for remote, n in rt.by_remote.items():
            by_remote.add_metric([remote], n)
        by_proc = CounterMetricFamily("gpusleuth_net_tcp_retransmit_segments_by_process", "TCP segments "
                                      "retransmitted, by owning process", labels=["pid", "comm"])
        for key, n in rt.by_process.items():
            by_proc.add_metric(_pid_comm(key), n)
        reason = CounterMetricFamily("gpusleuth_net_skb_drops", "Packets the kernel dropped (skb:kfree_skb), by "
                                     "reason", labels=["reason"])
        for name, n in dr.by_reason.items():
            reason.add_metric([name], n)
        drop_remote = CounterMetricFamily("gpusleuth_net_skb_drops_by_remote", "Dropped packets by remote "
                                          "endpoint", labels=["remote"])
        for remote, n in dr.by_remote.items():
            drop_remote.add_metric([remote], n)
        drop_proc = CounterMetricFamily("gpusleuth_net_skb_drops_by_process", "Dropped packets by the process "
                                        "owning the receiving socket", labels=["pid", "comm"])
        for key, n in dr.by_process.items():
            drop_proc.add_metric(_pid_comm(key), n)
        yield from (by_remote, by_proc, reason, drop_remote, drop_proc)
