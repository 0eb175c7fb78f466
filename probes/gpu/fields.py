"""NVML ids and tables the GPU sampler uses: field-value ids, clock-event reason bits, GPM metric ids, event types.

Numbers are those of nvml.h / nvidia-ml-py 12-13 (checked against pynvml.py); where the binding defines the name we
read it from the module so a newer binding wins.
"""
from __future__ import annotations

from typing import Any

from gpusleuth.probes.gpu.nvml import NA

ALL_LINKS = 0xFFFFFFFF  # scopeId that sums NVLink throughput counters over all links

# snapshot key -> (NVML field id, scopeId). One nvmlDeviceGetFieldValues call reads them all each poll.
FIELDS: dict[str, tuple[int, int]] = {
    "mem_temp_c": (82, 0),             # NVML_FI_DEV_MEMORY_TEMP, °C
    "energy_mj": (83, 0),              # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, mJ since driver load
    "pcie_replay_count": (94, 0),      # NVML_FI_DEV_PCIE_REPLAY_COUNTER
    "ecc_sbe_vol": (3, 0),             # NVML_FI_DEV_ECC_SBE_VOL_TOTAL
    "ecc_dbe_vol": (4, 0),             # NVML_FI_DEV_ECC_DBE_VOL_TOTAL
    "ecc_sbe_agg": (5, 0),             # NVML_FI_DEV_ECC_SBE_AGG_TOTAL
    "ecc_dbe_agg": (6, 0),             # NVML_FI_DEV_ECC_DBE_AGG_TOTAL
    "remapped_rows_cor": (142, 0),     # NVML_FI_DEV_REMAPPED_COR
    "remapped_rows_unc": (143, 0),     # NVML_FI_DEV_REMAPPED_UNC
    "row_remap_pending": (144, 0),     # NVML_FI_DEV_REMAPPED_PENDING (0/1)
    "row_remap_failure": (145, 0),     # NVML_FI_DEV_REMAPPED_FAILURE (0/1)
    "nvlink_tx_kib": (138, ALL_LINKS),  # NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, KiB counter
    "nvlink_rx_kib": (139, ALL_LINKS),  # NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, KiB counter
    "pcie_tx_bytes": (197, 0),         # NVML_FI_DEV_PCIE_COUNT_TX_BYTES, byte counter (newer drivers)
    "pcie_rx_bytes": (198, 0),         # NVML_FI_DEV_PCIE_COUNT_RX_BYTES
}

# NVML_VALUE_TYPE_* -> member of the c_nvmlValue_t union
VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def field_value(fv: Any) -> Any:
    """The number in one nvmlFieldValue_t, or NA when NVML returned an error for that field."""
    if fv.nvmlReturn != 0:
        return NA
    member = VALUE_MEMBERS.get(fv.valueType)
    return NA if member is None else getattr(fv.value, member)


def sample_value(value_type: int, sample: Any) -> Any:
    """The number in one nvmlSample_t (nvmlDeviceGetSamples) given the returned value type."""
    member = VALUE_MEMBERS.get(value_type)
    return NA if member is None else getattr(sample.sampleValue, member)


# Clock event (throttle) reasons: bit -> name. nvmlClocksEventReason* in nvidia-ml-py 12.535+.
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that are not a slowdown of a busy GPU (idle, or clocks a user asked for).
NOT_THROTTLING = 0x001 | 0x002 | 0x100


def decode_reasons(mask: int) -> list[str]:
    """Names of the set bits, low bit first; unknown bits as hex."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return names


# GPM metric ids (NVML_GPM_METRIC_*) -> snapshot key and scale to our unit.
# Utilisations come as 0..100 %, we keep ratios 0..1 (dcgm-exporter's PROF_* unit); MiB/s -> bytes/s.
GPM_METRICS: dict[str, tuple[int, float]] = {
    "gr_engine_active": (1, 0.01),   # GRAPHICS_UTIL
    "sm_active": (2, 0.01),          # SM_UTIL
    "sm_occupancy": (3, 0.01),       # SM_OCCUPANCY
    "tensor_active": (5, 0.01),      # ANY_TENSOR_UTIL
    "dram_active": (10, 0.01),       # DRAM_BW_UTIL
    "fp64_active": (11, 0.01),       # FP64_UTIL
    "fp32_active": (12, 0.01),       # FP32_UTIL
    "fp16_active": (13, 0.01),       # FP16_UTIL
    "pcie_tx_bytes_s": (20, 1048576.0),    # PCIE_TX_PER_SEC (MiB/s)
    "pcie_rx_bytes_s": (21, 1048576.0),    # PCIE_RX_PER_SEC
    "nvlink_tx_bytes_s": (61, 1048576.0),  # NVLINK_TOTAL_TX_PER_SEC
    "nvlink_rx_bytes_s": (60, 1048576.0),  # NVLINK_TOTAL_RX_PER_SEC
}

CORE_GPM_METRICS = ("gr_engine_active", "sm_active", "sm_occupancy", "tensor_active", "dram_active")

# NVML event types we listen for, by binding constant name -> our event name.
EVENT_TYPES: dict[str, str] = {
    "nvmlEventTypeXidCriticalError": "xid",
    "nvmlEventTypeDoubleBitEccError": "double_bit_ecc",
    "nvmlEventTypeSingleBitEccErrorStorm": "single_bit_ecc_storm",
    "nvmlEventTypeDramRetirementEvent": "dram_retirement",
    "nvmlEventTypeDramRetirementFailure": "dram_retirement_failure",
    "nvmlEventTypeNonFatalPoisonError": "non_fatal_poison",
    "nvmlEventTypeFatalPoisonError": "fatal_poison",
    "nvmlEventTypeGpuUnavailableError": "gpu_unavailable",
    "nvmlEventTypeGpuRecoveryAction": "gpu_recovery_action",
    "nvmlEventTypePowerSourceChange": "power_source_change",
}
EVENT_TYPE_BITS: dict[str, int] = {  # fallbacks for bindings that lack a name
    "nvmlEventTypeXidCriticalError": 0x8, "nvmlEventTypeDoubleBitEccError": 0x2,
    "nvmlEventTypeSingleBitEccErrorStorm": 0x200, "nvmlEventTypeDramRetirementEvent": 0x400,
    "nvmlEventTypeDramRetirementFailure": 0x800, "nvmlEventTypeNonFatalPoisonError": 0x1000,
    "nvmlEventTypeFatalPoisonError": 0x2000, "nvmlEventTypeGpuUnavailableError": 0x4000,
    "nvmlEventTypeGpuRecoveryAction": 0x8000, "nvmlEventTypePowerSourceChange": 0x80,
}


def event_bits(nv: Any) -> dict[int, str]:
    """bit -> our event name, with the bit values the binding defines."""
    return {getattr(nv, const, EVENT_TYPE_BITS[const]): name for const, name in EVENT_TYPES.items()}
