"""Prometheus collector for the scheduler probe's latest snapshot."""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from gpusleuth.exporters.base import SnapshotCollector
from gpusleuth.exporters.histograms import prometheus_buckets
from gpusleuth.probes.kernel.snapshot import SchedSnapshot


class SchedCollector(SnapshotCollector):
    """Run-queue latency histograms per watched process; off-CPU and run-queue time per thread."""

    source = "sched"

    def metrics(self, snap: SchedSnapshot) -> Iterator[Metric]:
        hist = HistogramMetricFamily("gpusleuth_runqueue_latency_seconds",
                                     "Time watched threads waited runnable before running", labels=["pid", "comm"])
        for pid, proc in snap.processes.items():
            h = proc.runq
            hist.add_metric([str(pid), proc.comm], prometheus_buckets(h.buckets, h.count), h.sum_ns / 1e9)
        yield hist
        labels = ["pid", "tid", "comm"]
        offcpu = CounterMetricFamily("gpusleuth_thread_offcpu_seconds", "Time a watched thread spent blocked",
                                     labels=labels)
        runq = CounterMetricFamily("gpusleuth_thread_runqueue_seconds", "Time a watched thread spent runnable "
                                   "but waiting for a CPU", labels=labels)
        switches = CounterMetricFamily("gpusleuth_thread_switches", "Times a watched thread was switched in",
                                       labels=labels)
        for tid, t in snap.threads.items():
            key = [str(t.pid), str(tid), t.comm]
            offcpu.add_metric(key, t.offcpu_ns / 1e9)
            runq.add_metric(key, t.runq_ns / 1e9)
            switches.add_metric(key, t.switches)
        yield from (offcpu, runq, switches)
        delays = CounterMetricFamily("gpusleuth_runqueue_delays", "Run-queue waits above probes.sched.slow_runq_ms")
        delays.add_metric([], snap.runq_delays_total)
        yield delays
