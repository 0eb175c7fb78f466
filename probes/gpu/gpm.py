"""GPM (GPU Performance Monitoring, Hopper and newer): SM active, SM occupancy, tensor, DRAM, PCIe, NVLink.

GPM metrics are computed by NVML from two samples of hardware counters. We keep two sample buffers and swap them
each poll, so each read costs one nvmlGpmSampleGet and one nvmlGpmMetricsGet and covers exactly the time since the
previous poll. For a MIG instance the samples come from nvmlGpmMigSampleGet(parent, gpu_instance_id).
"""
from __future__ import annotations

from typing import Any

import logging

from gpusleuth.probes.gpu.fields import CORE_GPM_METRICS, GPM_METRICS
from gpusleuth.probes.gpu.nvml import NA, Nvml

log = logging.getLogger("gpusleuth.probes.gpu.probe")


def is_gpm_supported(lib: Nvml, handle: Any, key: Any) -> bool:
    support = lib.query("nvmlGpmQueryDeviceSupport", handle, key=(key, "gpm_support"))
    return support is not NA and bool(getattr(support, "isSupportedDevice", 0))


class GpmSampler:
    """GPM metrics of one GPU (or one MIG GPU instance when gi_id is given) between consecutive reads."""

    def __init__(self, lib: Nvml, handle: Any, key: Any, gi_id: int | None = None) -> None:
        self.lib, self.handle, self.key, self.gi_id = lib, handle, key, gi_id
        self._prev: Any = NA
        self._cur: Any = NA
        self._metrics = list(GPM_METRICS.items())
        self._req: Any = None  # one nvmlGpmMetricsGet_t reused every poll (it is ~20 KB of ctypes)
        self.is_reduced = False  # fell back to the core metrics after the driver refused the full list

    def start(self) -> bool:
        """Allocate the two sample buffers and take the first sample. False when GPM cannot be used."""
        self._prev = self.lib.query("nvmlGpmSampleAlloc")
        self._cur = self.lib.query("nvmlGpmSampleAlloc")
        if self._prev is NA or self._cur is NA or not self._sample(self._prev):
            self.close()
            return False
        self._build_request()
        return True

    def _build_request(self) -> None:
        self._req = self.lib.nv.c_nvmlGpmMetricsGet_t()
        self._req.version = self.lib.const("NVML_GPM_METRICS_GET_VERSION", 1)
        self._req.numMetrics = len(self._metrics)
        for i, (_, (metric_id, _)) in enumerate(self._metrics):
            self._req.metrics[i].metricId = metric_id

    def _sample(self, buf: Any) -> bool:
        if self.gi_id is None:
            got = self.lib.query("nvmlGpmSampleGet", self.handle, buf, key=(self.key, "gpm_get"))
        else:
            got = self.lib.query("nvmlGpmMigSampleGet", self.handle, self.gi_id, buf, key=(self.key, "gpm_mig"))
        return got is not NA

    def read(self) -> dict[str, Any]:
        """Metrics since the previous read (NA for each metric NVML could not compute)."""
        if self._prev is NA or not self._sample(self._cur):
            return {}
        req = self._req
        req.sample1, req.sample2 = self._prev, self._cur
        got = self.lib.query("nvmlGpmMetricsGet", req)
        self._prev, self._cur = self._cur, self._prev  # the newest sample starts the next interval
        if got is NA:
            if not self.is_reduced:  # an older driver may reject a metric id it does not know: keep the core set
                log.warning("nvmlGpmMetricsGet refused the full metric list; using %s only", list(CORE_GPM_METRICS))
                self.is_reduced = True
                self._metrics = [(k, v) for k, v in self._metrics if k in CORE_GPM_METRICS]
                self._build_request()
            return {}
        out: dict[str, Any] = {}
        for i, (name, (_, scale)) in enumerate(self._metrics):
            metric = req.metrics[i]
            out[name] = metric.value * scale if metric.nvmlReturn == 0 else NA
        return out

    def close(self) -> None:
        for buf in (self._prev, self._cur):
            if buf is not NA:
                self.lib.query("nvmlGpmSampleFree", buf)
        self._prev = self._cur = NA
