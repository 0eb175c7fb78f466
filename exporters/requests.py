"""Prometheus collector for engine request latencies assembled from spans (agent side, per engine pid)."""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from gpusleuth.exporters.base import SnapshotCollector
from gpusleuth.probes.spans.snapshot import LatencyHistogram, SpansSnapshot

HELP = {
    "queue": "Time engine requests waited before their first scheduling",
    "prefill": "Time from first scheduling to the first token",
    "decode": "Time from the first token to the last",
    "ttft": "Time to first token, arrival to first token",
    "tpot": "Time per output token after the first",
    "e2e": "Arrival to finish",
}


def _buckets(h: LatencyHistogram) -> list[tuple[str, float]]:
    out, running = [], 0
    for bound, count in zip(h.bounds, h.counts):
        running += count
        out.append((repr(float(bound)), float(running)))
    out.append(("+Inf", float(h.count)))
    return out


class RequestCollector(SnapshotCollector):
    source = "spans"

    def metrics(self, snap: SpansSnapshot) -> Iterator[Metric]:
        families = {m: HistogramMetricFamily(f"gpusleuth_request_{m}_seconds", text, labels=["pid"])
                    for m, text in HELP.items()}
        for pid, hists in snap.histograms.items():
            for metric, h in hists.items():
                if metric in families:
                    families[metric].add_metric([str(pid)], _buckets(h), h.sum)
        yield from families.values()
        spans = CounterMetricFamily("gpusleuth_spans_received", "Engine spans received", labels=["pid"])
        for pid, s in snap.senders.items():
            spans.add_metric([str(pid)], s.spans)
        yield spans
        bad = CounterMetricFamily("gpusleuth_span_datagrams_rejected", "Span datagrams dropped", labels=["reason"])
        bad.add_metric(["malformed"], snap.decode_errors_total)
        bad.add_metric(["queue_full"], snap.queue_drops_total)
        yield bad
        in_flight = GaugeMetricFamily("gpusleuth_requests_in_flight", "Requests seen started but not finished")
        in_flight.add_metric([], snap.in_flight)
        yield in_flight
        evicted = CounterMetricFamily("gpusleuth_requests_evicted_in_flight", "In-flight requests forgotten "
                                      "unfinished because too many were open (an engine that never finishes them)")
        evicted.add_metric([], snap.evicted_in_flight)
        yield evicted
