"""Prometheus collector for the syscall probe's latest snapshot."""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from gpusleuth.exporters.base import SnapshotCollector
from gpusleuth.exporters.histograms import prometheus_buckets
from gpusleuth.probes.kernel.snapshot import SyscallSnapshot


class SyscallCollector(SnapshotCollector):
    """gpusleuth_syscall_latency_seconds{pid,comm,syscall} and slow-syscall / lost counters."""

    source = "syscalls"

    def metrics(self, snap: SyscallSnapshot) -> Iterator[Metric]:
        hist = HistogramMetricFamily("gpusleuth_syscall_latency_seconds",
                                     "Syscall latency of watched processes (log2 buckets, kernel-aggregated)",
                                     labels=["pid", "comm", "syscall"])
        for pid, proc in snap.processes.items():
            labels = [str(pid), proc.comm]
            for name, h in proc.syscalls.items():
                hist.add_metric([*labels, name], prometheus_buckets(h.buckets, h.count), h.sum_ns / 1e9)
        yield hist
        slow = CounterMetricFamily("gpusleuth_slow_syscalls", "Syscalls slower than probes.syscalls.slow_threshold_ms")
        slow.add_metric([], snap.slow_events_total)
        yield slow
        lost = CounterMetricFamily("gpusleuth_syscall_probe_lost", "Kernel records lost because a map or buffer "
                                   "was full", labels=["what"])
        lost.add_metric(["histogram_keys"], snap.lost_keys)
        lost.add_metric(["slow_events"], snap.lost_events)
        yield lost
