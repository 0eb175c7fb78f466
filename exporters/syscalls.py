"""Prometheus collector for the syscall probe's latest snapshot."""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from gpusleuth.exporters.base import EXITED_PID, SnapshotCollector
from gpusleuth.exporters.histograms import HistogramSeries
from gpusleuth.probes.kernel.snapshot import SyscallSnapshot


class SyscallCollector(SnapshotCollector):
    """gpusleuth_syscall_latency_seconds{pid,comm,syscall} and slow-syscall / lost counters. Exited processes'
    counts are folded per comm into pid="exited", so `sum by (comm)` stays monotonic as processes come and go."""

    source = "syscalls"

    def __init__(self, store, options=None) -> None:
        super().__init__(store, options)
        self._series = HistogramSeries()

    def metrics(self, snap: SyscallSnapshot) -> Iterator[Metric]:
        hist = HistogramMetricFamily("gpusleuth_syscall_latency_seconds",
                                     "Syscall latency of watched processes (log2 buckets, kernel-aggregated)",
                                     labels=["pid", "comm", "syscall"])
        factor = self.options.bucket_factor
        series = [(h.count, str(pid), proc.comm, name, h) for pid, proc in snap.processes.items()
                  for name, h in proc.syscalls.items()]
        series += [(h.count, EXITED_PID, comm, name, h) for comm, proc in snap.exited.items()
                   for name, h in proc.syscalls.items()]
        series.sort(key=lambda s: (-s[0], s[1], s[3]))  # the busiest first: the series budget keeps those
        for _, pid, comm, name, h in series:
            self._series.add(hist, (pid, comm, name), h, factor)
        self._series.sweep()
        yield hist
        slow = CounterMetricFamily("gpusleuth_slow_syscalls", "Syscalls slower than probes.syscalls.slow_threshold_ms")
        slow.add_metric([], snap.slow_events_total)
        yield slow
        lost = CounterMetricFamily("gpusleuth_syscall_probe_lost", "Kernel records lost because a map or buffer "
                                   "was full", labels=["what"])
        lost.add_metric(["histogram_keys"], snap.lost_keys)
        lost.add_metric(["slow_events"], snap.lost_events)
        yield lost
