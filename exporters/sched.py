"""Prometheus collector for the scheduler probe's latest snapshot.

Label sets stay bounded: per live watched process (exited ones fold into pid="exited" per comm), per-thread series
only for the exporter.top_threads threads with the most run-queue + off-CPU time (16 by default: every thread of a
client with a thread per request would add series without end), per cgroup of a watched process (its own and its quota-setting
ancestors), and per stuck thread while it is stuck; the series budget caps each family on top.
"""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from gpusleuth.exporters.base import EXITED_PID, SnapshotCollector
from gpusleuth.exporters.histograms import HistogramSeries
from gpusleuth.probes.kernel.snapshot import SchedSnapshot

THREAD_LABELS = ["pid", "tid", "comm"]


class SchedCollector(SnapshotCollector):
    """Run-queue latency histograms per watched process; per-thread times; stuck threads; cgroup throttling."""

    source = "sched"

    def __init__(self, store, options=None) -> None:
        super().__init__(store, options)
        self._series = HistogramSeries()

    def metrics(self, snap: SchedSnapshot) -> Iterator[Metric]:
        hist = HistogramMetricFamily("gpusleuth_runqueue_latency_seconds",
                                     "Time watched threads waited runnable before running", labels=["pid", "comm"])
        series = [(p.runq.sum_ns, str(pid), p.comm, p.runq) for pid, p in snap.processes.items()]
        series += [(p.runq.sum_ns, EXITED_PID, comm, p.runq) for comm, p in snap.exited.items()]
        series.sort(key=lambda s: (-s[0], s[1], s[2]))  # the longest waits first: the series budget keeps those
        for _, pid, comm, h in series:
            self._series.add(hist, (pid, comm), h, self.options.bucket_factor)
        self._series.sweep()
        yield hist
        yield from self._threads(snap)
        stuck = GaugeMetricFamily("gpusleuth_thread_stuck_seconds", "How long a watched thread has been stopped, "
                                  "in D, frozen or runnable without running (>= probes.sched.ongoing_ms)",
                                  labels=THREAD_LABELS + ["state"])
        for o in snap.ongoing:
            stuck.add_metric([str(o.pid), str(o.tid), o.comm, o.state], max(snap.t_ns - o.since_ns, 0) / 1e9)
        yield stuck
        yield from self._cgroups(snap)
        yield from self._totals(snap)

    def _threads(self, snap: SchedSnapshot) -> Iterator[Metric]:
        offcpu = CounterMetricFamily("gpusleuth_thread_offcpu_seconds", "Time a watched thread spent blocked",
                                     labels=THREAD_LABELS)
        runq = CounterMetricFamily("gpusleuth_thread_runqueue_seconds", "Time a watched thread spent runnable "
                                   "but waiting for a CPU", labels=THREAD_LABELS)
        switches = CounterMetricFamily("gpusleuth_thread_switches", "Times a watched thread was switched in",
                                       labels=THREAD_LABELS)
        faults = CounterMetricFamily("gpusleuth_thread_page_faults", "User page faults of a watched thread",
                                     labels=THREAD_LABELS)
        reclaim = CounterMetricFamily("gpusleuth_thread_reclaim_seconds", "Time a watched thread spent in direct "
                                      "or memcg reclaim", labels=THREAD_LABELS)
        top = self.options.top_threads
        # the engines' step threads first (the runbooks ask for them), then the threads that waited most
        threads = sorted(snap.threads.items(), key=lambda kv: (not kv[1].is_hot, -(kv[1].runq_ns + kv[1].offcpu_ns))
                         )[:top] if top else []
        for tid, t in threads:
            key = [str(t.pid), str(tid), t.comm]
            offcpu.add_metric(key, t.offcpu_ns / 1e9)
            runq.add_metric(key, t.runq_ns / 1e9)
            switches.add_metric(key, t.switches)
            faults.add_metric(key, t.faults)
            reclaim.add_metric(key, t.reclaim_ns / 1e9)
        yield from (offcpu, runq, switches, faults, reclaim)

    def _cgroups(self, snap: SchedSnapshot) -> Iterator[Metric]:
        throttled = CounterMetricFamily("gpusleuth_cgroup_cpu_throttled_seconds", "Time a watched process's cgroup "
                                        "was throttled by its CPU quota", labels=["cgroup"])
        periods = CounterMetricFamily("gpusleuth_cgroup_cpu_throttled_periods", "Quota periods in which the cgroup "
                                      "was throttled", labels=["cgroup"])
        quota = GaugeMetricFamily("gpusleuth_cgroup_cpu_quota_cpus", "The cgroup's CPU quota in CPUs "
                                  "(quota / period); absent without a quota", labels=["cgroup"])
        pressure = CounterMetricFamily("gpusleuth_cgroup_memory_pressure_some_seconds", "PSI memory 'some' time: "
                                       "scope cgroup (v2) or system (v1 has no per-cgroup PSI)",
                                       labels=["cgroup", "scope"])
        for c in snap.cgroups:
            throttled.add_metric([c.path], c.throttled_ns / 1e9)
            periods.add_metric([c.path], c.nr_throttled)
            if c.quota_us is not None and c.period_us:
                quota.add_metric([c.path], c.quota_us / c.period_us)
            if c.memory_pressure_some_us is not None:
                pressure.add_metric([c.path, c.pressure_scope], c.memory_pressure_some_us / 1e6)
        frozen = GaugeMetricFamily("gpusleuth_process_frozen", "1 while a watched process's cgroup is frozen",
                                   labels=["pid"])
        for pid in snap.frozen_pids:
            frozen.add_metric([str(pid)], 1)
        yield from (throttled, periods, quota, pressure, frozen)

    def _totals(self, snap: SchedSnapshot) -> Iterator[Metric]:
        for name, value, doc in (
                ("gpusleuth_runqueue_delays", snap.runq_delays_total,
                 "Run-queue waits above probes.sched.slow_runq_ms"),
                ("gpusleuth_offcpu_events", snap.offcpu_events_total, "Off-CPU intervals reported as events"),
                ("gpusleuth_reclaim_events", snap.reclaim_events_total, "Direct / memcg reclaims reported as events"),
                ("gpusleuth_softirq_events", snap.softirq_events_total, "Runs of CPU windows busy in softirq"),
                ("gpusleuth_cgroup_throttle_events", snap.cgroup_throttle_events_total, "Polls in which a watched "
                 "cgroup was throttled"),
                ("gpusleuth_runqueue_culprits_lost", snap.lost_culprits, "Waits whose culprits were not tracked")):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
