"""gpusleuth's own GPU series, beside the dcgm-compatible ones: per-process use, clock-event reasons, XIDs per code,
other critical events, lost GPUs, P-state. Built from the "gpu" snapshot only; series of exited processes and
vanished GPUs disappear with the snapshot. Labels: gpu (NVML index) and UUID like dcgm-exporter, plus the series' own.

  gpusleuth_gpu_lost{gpu,UUID,pci_bus_id}                 1 when NVML reported the GPU lost, else 0
  gpusleuth_gpu_xid_errors_total{gpu,UUID,xid,name,severity}  XIDs seen since the agent started, per code
  gpusleuth_gpu_critical_events_total{gpu,UUID,kind}      other NVML critical events (double_bit_ecc, ...)
  gpusleuth_gpu_clock_event_reason{gpu,UUID,reason}       1 while that clock-event (throttle) reason is active
  gpusleuth_gpu_throttled{gpu,UUID}                       1 while a reason other than idle/user clocks is active
  gpusleuth_gpu_performance_state{gpu,UUID}               P-state 0 (max) .. 15 (min)
  gpusleuth_gpu_power_average_watts{gpu,UUID}             mean power between polls from the energy counter
  gpusleuth_gpu_row_remap_pending{gpu,UUID}               1 when a row remap waits for a GPU reset
  gpusleuth_gpu_mig_enabled{gpu,UUID}                     1 when MIG mode is on
  gpusleuth_gpu_process_memory_used_bytes{gpu,UUID,pid,comm,type}
  gpusleuth_gpu_process_sm_utilization_ratio{gpu,UUID,pid,comm}      0..1, absent when NVML has no fresh sample
  gpusleuth_gpu_process_memory_utilization_ratio{gpu,UUID,pid,comm}  0..1
  gpusleuth_gpu_xid_thread_running                        1 while the NVML event thread waits for events
  gpusleuth_gpu_xid_lost_waits_total                      event waits that failed on a lost GPU (the thread backs off)
"""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gpusleuth.exporters.base import SnapshotCollector
from gpusleuth.probes.gpu.fields import CLOCK_EVENT_REASONS, NOT_THROTTLING
from gpusleuth.probes.gpu.snapshot import GpuSnapshot, GpuState
from gpusleuth.probes.gpu.xid_table import xid_name, xid_severity

GPU = ["gpu", "UUID"]


class GpuCollector(SnapshotCollector):
    """gpusleuth_gpu_* series; reads store.snapshot("gpu")."""

    source = "gpu"

    def metrics(self, snap: GpuSnapshot) -> Iterator[Metric]:
        yield from self._health(snap.gpus)
        yield from self._state(snap.gpus)
        yield from self._processes(snap.gpus)
        running = GaugeMetricFamily("gpusleuth_gpu_xid_thread_running",
                                    "1 while the NVML event thread waits for XID/critical events")
        running.add_metric([], 1.0 if snap.xid.is_running else 0.0)
        lost_waits = CounterMetricFamily("gpusleuth_gpu_xid_lost_waits", "NVML event waits that failed because a "
                                         "GPU of the event set was lost (the thread backs off and waits again)")
        lost_waits.add_metric([], snap.xid.lost_waits)
        yield from (running, lost_waits)

    def _health(self, gpus: list[GpuState]) -> Iterator[Metric]:
        lost = GaugeMetricFamily("gpusleuth_gpu_lost", "1 when NVML reported the GPU lost", labels=GPU + ["pci_bus_id"])
        xids = CounterMetricFamily("gpusleuth_gpu_xid_errors", "XID errors since the agent started, per code",
                                   labels=GPU + ["xid", "name", "severity"])
        events = CounterMetricFamily("gpusleuth_gpu_critical_events", "NVML critical events other than XIDs",
                                     labels=GPU + ["kind"])
        for g in gpus:
            ids = [str(g.index), g.uuid]
            lost.add_metric(ids + [g.pci_bus_id], 1.0 if g.is_lost else 0.0)
            for code, n in g.xid_counts.items():
                xids.add_metric(ids + [str(code), xid_name(code), xid_severity(code)], n)
            for kind, n in g.event_counts.items():
                if kind != "xid":
                    events.add_metric(ids + [kind], n)
        yield from (lost, xids, events)

    def _state(self, gpus: list[GpuState]) -> Iterator[Metric]:
        reason = GaugeMetricFamily("gpusleuth_gpu_clock_event_reason", "1 while this clock-event reason is active",
                                   labels=GPU + ["reason"])
        throttled = GaugeMetricFamily("gpusleuth_gpu_throttled", "1 while clocks are held down by power, thermal "
                                      "or sync reasons (not idle or user clocks)", labels=GPU)
        pstate = GaugeMetricFamily("gpusleuth_gpu_performance_state", "P-state, 0 = max performance", labels=GPU)
        power_avg = GaugeMetricFamily("gpusleuth_gpu_power_average_watts",
                                      "Mean power between polls from the energy counter", labels=GPU)
        remap = GaugeMetricFamily("gpusleuth_gpu_row_remap_pending", "1 when a row remap waits for a GPU reset",
                                  labels=GPU)
        mig = GaugeMetricFamily("gpusleuth_gpu_mig_enabled", "1 when MIG mode is on", labels=GPU)
        for g in gpus:
            if g.is_lost:
                continue
            ids = [str(g.index), g.uuid]
            mask = g.clock_event_reasons
            if mask is not None:
                for bit, name in CLOCK_EVENT_REASONS.items():
                    reason.add_metric(ids + [name], 1.0 if mask & bit else 0.0)
                throttled.add_metric(ids, 1.0 if mask & ~NOT_THROTTLING else 0.0)
            for family, value in ((pstate, g.pstate), (power_avg, g.power_avg_w), (remap, g.row_remap_pending)):
                if value is not None:
                    family.add_metric(ids, float(value))
            mig.add_metric(ids, float(g.is_mig))
        yield from (reason, throttled, pstate, power_avg, remap, mig)

    def _processes(self, gpus: list[GpuState]) -> Iterator[Metric]:
        labels = GPU + ["pid", "comm"]
        used = GaugeMetricFamily("gpusleuth_gpu_process_memory_used_bytes", "GPU memory used by the process",
                                 labels=labels + ["type"])
        sm = GaugeMetricFamily("gpusleuth_gpu_process_sm_utilization_ratio",
                               "Share of time the process had a kernel on the SMs (NVML process utilization)",
                               labels=labels)
        mem = GaugeMetricFamily("gpusleuth_gpu_process_memory_utilization_ratio",
                                "Share of time the process was reading or writing device memory", labels=labels)
        for g in gpus:
            if g.is_lost:
                continue
            for p in g.processes:
                ids = [str(g.index), g.uuid, str(p.pid), p.comm]
                if p.used_bytes is not None:
                    used.add_metric(ids + [p.type], float(p.used_bytes))
                if p.sm_util_pct is not None:
                    sm.add_metric(ids, p.sm_util_pct / 100.0)
                if p.mem_util_pct is not None:
                    mem.add_metric(ids, p.mem_util_pct / 100.0)
        yield from (used, sm, mem)
