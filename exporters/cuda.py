"""Prometheus collector for the cuda probe's latest snapshot (probes/cuda/snapshot.py).

Cardinality is bounded by the watched processes: labels are pid and comm, plus small fixed sets (sync call,
copy direction, step bound, collective op) and, for collectives, the communicator's group key and rank (a process
has a few communicators). No thread ids and no per-kernel labels. Durations are histograms in seconds with the
shared fixed bounds (exporters/histograms.py).
"""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from gpusleuth.exporters.base import SnapshotCollector
from gpusleuth.exporters.histograms import prometheus_buckets
from gpusleuth.probes.bpf.log2_hist import Log2Counts
from gpusleuth.probes.cuda.snapshot import CudaSnapshot

P = "gpusleuth_cuda_"


def _hist(family: HistogramMetricFamily, labels: list[str], h: Log2Counts, factor: int = 4) -> None:
    family.add_metric(labels, prometheus_buckets(h.buckets, h.count, factor), h.sum_ns / 1e9)


class CudaCollector(SnapshotCollector):
    """Launches, syncs, host steps, copies, allocations and collectives per watched process; TP stragglers."""

    source = "cuda"

    def metrics(self, snap: CudaSnapshot) -> Iterator[Metric]:
        yield from self._launch_metrics(snap)
        yield from self._memory_metrics(snap)
        yield from self._collective_metrics(snap)
        yield from self._group_metrics(snap)
        yield from self._health(snap)

    @staticmethod
    def _launch_metrics(snap: CudaSnapshot) -> Iterator[Metric]:
        base = ["pid", "comm"]
        launches = CounterMetricFamily(P + "kernel_launches", "Kernel launches (cuLaunchKernel*)", labels=base)
        graphs = CounterMetricFamily(P + "graph_launches", "CUDA graph launches", labels=base)
        sync = HistogramMetricFamily(P + "sync_wait_seconds", "Time a host thread blocked waiting for the GPU",
                                     labels=[*base, "call"])
        steps = CounterMetricFamily(P + "host_steps", "Host steps (sync to sync) by what bound them: the GPU when "
                                    "the sync wait was at least probes.cuda.gpu_bound_share of the step",
                                    labels=[*base, "bound"])
        step_s = CounterMetricFamily(P + "host_step_seconds", "Host time of those steps", labels=base)
        wait_s = CounterMetricFamily(P + "host_step_sync_wait_seconds", "Sync wait within them (share = "
                                     "rate of this / rate of host_step_seconds)", labels=base)
        idle = HistogramMetricFamily(P + "gpu_idle_gap_seconds", "From a sync's return to the next launch: the "
                                     "GPU had nothing queued by the thread", labels=base)
        for pid, proc in snap.processes.items():
            key = [str(pid), proc.comm]
            launches.add_metric(key, proc.launches)
            graphs.add_metric(key, proc.graph_launches)
            for call, stats in proc.syncs.items():
                _hist(sync, [*key, call], stats.duration)
            for bound in ("cpu", "gpu"):
                steps.add_metric([*key, bound], proc.host_steps.get(bound, 0))
            step_s.add_metric(key, proc.host_step_ns / 1e9)
            wait_s.add_metric(key, proc.sync_wait_ns / 1e9)
            _hist(idle, key, proc.idle_gaps)
        yield from (launches, graphs, sync, steps, step_s, wait_s, idle)

    @staticmethod
    def _memory_metrics(snap: CudaSnapshot) -> Iterator[Metric]:
        base = ["pid", "comm"]
        copy_b = CounterMetricFamily(P + "memcpy_bytes", "Bytes copied", labels=[*base, "direction"])
        copy_s = HistogramMetricFamily(P + "memcpy_seconds", "Copy call duration (the copy itself for "
                                       "synchronous copies)", labels=[*base, "direction"])
        bandwidth = GaugeMetricFamily(P + "memcpy_bandwidth_bytes_per_second", "Bytes per second of synchronous "
                                      "copies (calls with no stream), since the probe attached",
                                      labels=[*base, "direction"])
        allocs = CounterMetricFamily(P + "allocations", "Device allocations", labels=base)
        alloc_b = CounterMetricFamily(P + "allocated_bytes", "Bytes allocated (successful allocations)", labels=base)
        fails = CounterMetricFamily(P + "allocation_failures", "Failed device allocations", labels=base)
        freed = CounterMetricFamily(P + "freed_bytes", "Bytes freed (of allocations seen)", labels=base)
        live = GaugeMetricFamily(P + "live_allocated_bytes", "Allocated minus freed since the probe attached",
                                 labels=base)
        libs = GaugeMetricFamily(P + "library_attached", "Per library the process maps: 1 when its uprobes are "
                                 "attached", labels=[*base, "library"])
        for pid, proc in snap.processes.items():
            key = [str(pid), proc.comm]
            for direction, stats in proc.copies.items():
                copy_b.add_metric([*key, direction], stats.bytes)
                _hist(copy_s, [*key, direction], stats.duration)
            for direction, rate in proc.copy_bandwidth.items():
                bandwidth.add_metric([*key, direction], rate)
            allocs.add_metric(key, proc.allocs.count)
            alloc_b.add_metric(key, proc.allocs.bytes)
            fails.add_metric(key, proc.allocs.failures)
            freed.add_metric(key, proc.frees.bytes)
            live.add_metric(key, proc.live_alloc_bytes)
            for kind, lib in proc.libraries.items():
                libs.add_metric([*key, kind], 1.0 if lib.uprobes else 0.0)
        yield from (copy_b, copy_s, bandwidth, allocs, alloc_b, fails, freed, live, libs)

    def _collective_metrics(self, snap: CudaSnapshot) -> Iterator[Metric]:
        labels = ["pid", "comm", "library", "group", "rank", "op"]
        calls = CounterMetricFamily("gpusleuth_collective_calls", "NCCL and gloo collective / p2p calls",
                                    labels=labels)
        nbytes = CounterMetricFamily("gpusleuth_collective_bytes", "Bytes of NCCL collectives (count x type size)",
                                     labels=labels)
        dur = HistogramMetricFamily("gpusleuth_collective_call_seconds", "NCCL call duration on the host (an "
                                    "enqueue unless it blocks)", labels=labels)
        for pid, proc in snap.processes.items():
            for c in proc.collectives:
                key = [str(pid), proc.comm, c.library, c.group, str(c.rank), c.op]
                calls.add_metric(key, c.stats.count)
                nbytes.add_metric(key, c.stats.bytes)
                if c.library == "nccl":
                    _hist(dur, key, c.stats.duration)
        yield from (calls, nbytes, dur)

    def _group_metrics(self, snap: CudaSnapshot) -> Iterator[Metric]:
        labels = ["group", "rank"]
        last = CounterMetricFamily("gpusleuth_tp_straggler_collectives", "Collectives this rank entered last",
                                   labels=labels)
        caused = CounterMetricFamily("gpusleuth_tp_straggler_wait_seconds", "Time the other ranks waited for this "
                                     "rank in those collectives (its cost)", labels=labels)
        waited = CounterMetricFamily("gpusleuth_tp_rank_wait_seconds", "Time this rank waited for the last one",
                                     labels=labels)
        matched = CounterMetricFamily("gpusleuth_tp_collectives_matched", "Collectives seen on every rank",
                                      labels=["group"])
        unmatched = CounterMetricFamily("gpusleuth_tp_collectives_unmatched", "Collectives seen on some ranks only",
                                        labels=["group"])
        for key, g in snap.groups.items():
            matched.add_metric([key], g.matched)
            unmatched.add_metric([key], g.unmatched)
            for rank, r in g.ranks.items():
                last.add_metric([key, str(rank)], r.last)
                caused.add_metric([key, str(rank)], r.caused_wait_ns / 1e9)
                waited.add_metric([key, str(rank)], r.waited_ns / 1e9)
        yield from (last, caused, waited, matched, unmatched)

    @staticmethod
    def _health(snap: CudaSnapshot) -> Iterator[Metric]:
        uprobes = GaugeMetricFamily(P + "uprobes", "Uprobes attached now, all processes")
        uprobes.add_metric([], snap.uprobes)
        refused = CounterMetricFamily(P + "uprobes_refused", "Uprobes not attached: probes.cuda.max_uprobes reached")
        refused.add_metric([], snap.uprobes_refused)
        lost = CounterMetricFamily(P + "probe_lost", "What the cuda probe's kernel side could not record",
                                   labels=["what"])
        for what, n in (("aggregate_keys", snap.lost_keys), ("events", snap.lost_events),
                        ("threads", snap.lost_threads)):
            lost.add_metric([what], n)
        stragglers = CounterMetricFamily("gpusleuth_tp_stragglers", "Collectives whose last rank entered at least "
                                         "probes.cuda.straggler_min_ms after the first (tp.straggler events)")
        stragglers.add_metric([], snap.stragglers_total)
        yield from (uprobes, refused, lost, stragglers)
