"""dcgm-exporter compatible GPU metrics, built from the "gpu" snapshot only (no NVML on the scrape path).

Names, labels and units follow dcgm-exporter's default counters (etc/default-counters.csv and
dcp-metrics-included.csv, 3.x/4.x), so dashboards built on it work unchanged. Labels on every series:
gpu (NVML index), UUID, pci_bus_id, device ("nvidia<minor>"), modelName, Hostname, DCGM_FI_DRIVER_VERSION;
MIG instance series add GPU_I_PROFILE and GPU_I_ID. (dcgm-exporter renamed Hostname to hostname after 4.8; all
released versions and published dashboards use Hostname.)

Mapping (dcgm name <- NVML source, unit):
  DCGM_FI_DEV_GPU_UTIL         gauge   <- nvmlDeviceGetUtilizationRates.gpu, %      (absent under MIG)
  DCGM_FI_DEV_MEM_COPY_UTIL    gauge   <- nvmlDeviceGetUtilizationRates.memory, %   (absent under MIG)
  DCGM_FI_DEV_ENC_UTIL / _DEC_UTIL gauge <- nvmlDeviceGetEncoder/DecoderUtilization, %
  DCGM_FI_DEV_SM_CLOCK / _MEM_CLOCK gauge <- nvmlDeviceGetClockInfo(SM / MEM), MHz
  DCGM_FI_DEV_GPU_TEMP         gauge   <- nvmlDeviceGetTemperature(GPU), °C
  DCGM_FI_DEV_MEMORY_TEMP      gauge   <- field NVML_FI_DEV_MEMORY_TEMP, °C
  DCGM_FI_DEV_POWER_USAGE      gauge   <- nvmlDeviceGetPowerUsage mW / 1000 = W
  DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter <- field NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, mJ
  DCGM_FI_DEV_FB_FREE / _USED / _RESERVED gauge <- nvmlDeviceGetMemoryInfo_v2 bytes // 2**20 = MiB
  DCGM_FI_DEV_PCIE_REPLAY_COUNTER counter <- field NVML_FI_DEV_PCIE_REPLAY_COUNTER
  DCGM_FI_DEV_XID_ERRORS       gauge   <- last XID code from the NVML event thread (0: none yet)
  DCGM_FI_DEV_CLOCK_THROTTLE_REASONS gauge <- nvmlDeviceGetCurrentClocksEventReasons bitmask
  DCGM_FI_DEV_ECC_{SBE,DBE}_{VOL,AGG}_TOTAL counter <- fields NVML_FI_DEV_ECC_*_TOTAL
  DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS / _UNCORRECTABLE_ counter <- fields NVML_FI_DEV_REMAPPED_COR / _UNC
  DCGM_FI_DEV_ROW_REMAP_FAILURE gauge  <- field NVML_FI_DEV_REMAPPED_FAILURE (0/1)
  DCGM_FI_PROF_GR_ENGINE_ACTIVE, _SM_ACTIVE, _SM_OCCUPANCY, _PIPE_TENSOR_ACTIVE, _DRAM_ACTIVE,
  _PIPE_FP64_ACTIVE, _PIPE_FP32_ACTIVE, _PIPE_FP16_ACTIVE gauge <- GPM GRAPHICS/SM/SM_OCCUPANCY/ANY_TENSOR/
      DRAM_BW/FP64/FP32/FP16 utilisation % / 100 = ratio 0..1
  DCGM_FI_PROF_PCIE_TX_BYTES / _RX_BYTES gauge <- PCIe byte counters (or GPM PCIE_*_PER_SEC), bytes/s
  DCGM_FI_PROF_NVLINK_TX_BYTES / _RX_BYTES gauge <- NVLink throughput counters (or GPM NVLINK_TOTAL_*), bytes/s
Not exported: DCGM_FI_DEV_VGPU_LICENSE_STATUS (no vGPU) and DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL (its unit is not
documented by NVIDIA; the PROF NVLink byte rates above carry the same information with a defined unit).

Type note: dcgm-exporter declares its counters as `counter` although their names lack `_total`. OpenMetrics, which
Prometheus negotiates by default and prometheus_client serves, rejects such a counter sample, and prometheus_client's
text format would rename the TYPE line to `<name>_total`. So those series are exposed as untyped (COUNTER_TYPE) with
the exact dcgm name, labels, unit and value; rate()/increase() work on them unchanged.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from gpusleuth.exporters.base import SnapshotCollector
from gpusleuth.probes.gpu.snapshot import GpmMetrics, GpuSnapshot, GpuState

COUNTER_TYPE = "unknown"  # see "Type note" above; "counter" if the server only ever speaks text format 0.0.4
LABELS = ("gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION")

# (dcgm name, type, help, GpuState field)
DEVICE_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", "sm_clock_mhz"),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", "mem_clock_mhz"),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", "mem_temp_c"),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "gpu_temp_c"),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "power_w"),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ).",
     "energy_mj"),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.", "pcie_replay_count"),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", "util_gpu_pct"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", "util_mem_pct"),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %).", "enc_util_pct"),
    ("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %).", "dec_util_pct"),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", "last_xid"),
    ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "gauge", "Current clock event (throttle) reasons bitmask.",
     "clock_event_reasons"),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", "fb_free_mib"),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", "fb_used_mib"),
    ("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).", "fb_reserved_mib"),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Total number of single-bit volatile ECC errors.", "ecc_sbe_vol"),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", "Total number of double-bit volatile ECC errors.", "ecc_dbe_vol"),
    ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "counter", "Total number of single-bit persistent ECC errors.", "ecc_sbe_agg"),
    ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "counter", "Total number of double-bit persistent ECC errors.", "ecc_dbe_agg"),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for uncorrectable errors",
     "remapped_rows_unc"),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for correctable errors",
     "remapped_rows_cor"),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed", "row_remap_failure"),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", "The rate of data transmitted over the PCIe bus - including both "
     "protocol headers and data payloads - in bytes per second.", "pcie_tx_bytes_s"),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", "The rate of data received over the PCIe bus - including both "
     "protocol headers and data payloads - in bytes per second.", "pcie_rx_bytes_s"),
    ("DCGM_FI_PROF_NVLINK_TX_BYTES", "gauge", "The rate of data transmitted over NVLink, in bytes per second.",
     "nvlink_tx_bytes_s"),
    ("DCGM_FI_PROF_NVLINK_RX_BYTES", "gauge", "The rate of data received over NVLink, in bytes per second.",
     "nvlink_rx_bytes_s"),
)
# (dcgm name, type, help, GpmMetrics field); exported per GPU, and per MIG instance (with GPU_I_* labels) where MIG
# is on.
PROF_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.", "gr_engine_active"),
    ("DCGM_FI_PROF_SM_ACTIVE", "gauge", "The ratio of cycles an SM has at least 1 warp assigned.", "sm_active"),
    ("DCGM_FI_PROF_SM_OCCUPANCY", "gauge", "The ratio of number of warps resident on an SM.", "sm_occupancy"),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge", "Ratio of cycles the tensor (HMMA) pipe is active.",
     "tensor_active"),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge", "Ratio of cycles the device memory interface is active sending or "
     "receiving data.", "dram_active"),
    ("DCGM_FI_PROF_PIPE_FP64_ACTIVE", "gauge", "Ratio of cycles the fp64 pipes are active.", "fp64_active"),
    ("DCGM_FI_PROF_PIPE_FP32_ACTIVE", "gauge", "Ratio of cycles the fp32 pipes are active.", "fp32_active"),
    ("DCGM_FI_PROF_PIPE_FP16_ACTIVE", "gauge", "Ratio of cycles the fp16 pipes are active.", "fp16_active"),
)
MIG_FB = ("DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_RESERVED")
# The tables name snapshot fields; a renamed field must fail here, at import, not silently drop a series.
assert {m[3] for m in DEVICE_METRICS} <= {f.name for f in fields(GpuState)}, "DEVICE_METRICS names a missing field"
assert {m[3] for m in PROF_METRICS} <= {f.name for f in fields(GpmMetrics)}, "PROF_METRICS names a missing field"


def _family(name: str, kind: str, doc: str) -> Metric:
    if kind == "gauge":
        return GaugeMetricFamily(name, doc)
    return Metric(name, doc, COUNTER_TYPE)


def gpu_labels(snap: GpuSnapshot, gpu: GpuState) -> dict[str, str]:
    """dcgm-exporter's label set for one GPU."""
    return {"gpu": str(gpu.index), "UUID": gpu.uuid, "pci_bus_id": gpu.pci_bus_id, "device": gpu.device,
            "modelName": gpu.name, "Hostname": snap.hostname, "DCGM_FI_DRIVER_VERSION": snap.driver_version}


class DcgmCollector(SnapshotCollector):
    """Prometheus collector with dcgm-exporter's names; reads store.snapshot("gpu")."""

    source = "gpu"

    def metrics(self, snap: GpuSnapshot) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for name, kind, doc, _ in DEVICE_METRICS + PROF_METRICS:
            families[name] = _family(name, kind, doc)
        for gpu in snap.gpus:
            labels = gpu_labels(snap, gpu)
            if gpu.is_lost:  # values would be stale: only the last XID (often 79) stays; gpusleuth_gpu_lost=1
                _add(families["DCGM_FI_DEV_XID_ERRORS"], labels, gpu.last_xid)
                continue
            for name, _, _, key in DEVICE_METRICS:
                _add(families[name], labels, getattr(gpu, key))
            for name, _, _, key in PROF_METRICS:
                _add(families[name], labels, getattr(gpu.gpm, key))
            for inst in gpu.mig_instances:
                mig_labels = {**labels, "GPU_I_PROFILE": inst.profile, "GPU_I_ID": str(inst.gi_id)}
                for name, value in zip(MIG_FB, (inst.fb_free_mib, inst.fb_used_mib, inst.fb_reserved_mib)):
                    _add(families[name], mig_labels, value)
                for name, _, _, key in PROF_METRICS:
                    _add(families[name], mig_labels, getattr(inst.gpm, key))
        yield from (f for f in families.values() if f.samples)


def _add(family: Metric, labels: dict[str, str], value: Any) -> None:
    if value is None:
        return  # NVML could not say: no series rather than a made-up number
    family.add_sample(family.name, labels, float(value))
