"""What the GPU probe publishes each poll (`store.snapshot("gpu")`).

A value NVML cannot give is None, never a guess. Units are converted on intake (probes/gpu/device.py): mW -> W,
bytes -> MiB (floor, like nvidia-smi), counters -> per-second rates, GPM percentages -> ratios 0..1.
Tiers: most values are read every poll; NVML field values (energy, PCIe/NVLink counters, ECC, row remap, memory
temperature) and GPM on the counters interval; encoder/decoder utilisation, power limit and processes on the
detail interval. Between reads a value keeps its last reading.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

FieldValue = int | float  # an NVML field value, in the type NVML reported it (nvmlValue_t union member)


@dataclass(slots=True)
class GpmMetrics:
    """GPM ratios 0..1 over the last counters interval (dcgm-exporter's PROF_* unit); None: not measured."""

    gr_engine_active: float | None = None
    sm_active: float | None = None  # cycles an SM had at least one warp
    sm_occupancy: float | None = None  # warps resident per SM, of the maximum
    tensor_active: float | None = None
    dram_active: float | None = None
    fp64_active: float | None = None
    fp32_active: float | None = None
    fp16_active: float | None = None


GPM_RATIOS = frozenset(f.name for f in fields(GpmMetrics))


def gpm_metrics(values: dict[str, Any]) -> GpmMetrics:
    """The ratios among a GPM read (GpmSampler.read, NA already turned into None); its link rates are left out."""
    return GpmMetrics(**{k: v for k, v in values.items() if k in GPM_RATIOS})


@dataclass(slots=True)
class MigState:
    """One MIG device (GPU instance + compute instance); labelled GPU_I_ID / GPU_I_PROFILE by the exporter."""

    gi_id: int = 0
    ci_id: int = -1  # -1: NVML gave no compute instance id
    uuid: str = ""
    profile: str = ""  # e.g. "1g.10gb"
    fb_used_mib: int | None = None
    fb_free_mib: int | None = None
    fb_reserved_mib: int | None = None  # None without nvmlMemory_v2
    fb_total_mib: int | None = None
    gpm: GpmMetrics = field(default_factory=GpmMetrics)
    # PCIe / NVLink rates of this instance from GPM, bytes/s
    pcie_tx_bytes_s: float | None = None
    pcie_rx_bytes_s: float | None = None
    nvlink_tx_bytes_s: float | None = None
    nvlink_rx_bytes_s: float | None = None


@dataclass(slots=True)
class GpuProcess:
    """One process using the GPU (or one of its MIG instances)."""

    pid: int = 0
    type: str = "C"  # C (compute), G (graphics) or C+G
    used_bytes: int | None = None  # None: NVML cannot tell (WDDM)
    gi_id: int | None = None  # MIG GPU / compute instance, None outside MIG
    ci_id: int | None = None
    comm: str = ""
    cmdline: str = ""  # at most 200 characters
    used_mib: int | None = None
    sm_util_pct: int | None = None  # None when NVML has no sample newer than process_stale_s
    mem_util_pct: int | None = None


@dataclass(slots=True)
class GpuState:
    """One physical GPU. A lost GPU keeps only its identity and event counts: its last values would be stale."""

    index: int = 0  # NVML index
    uuid: str = ""
    name: str = ""
    pci_bus_id: str = ""
    device: str = ""  # "nvidia<minor>"
    is_lost: bool = False
    lost_reason: str = ""
    is_mig: bool = False
    xid_counts: dict[int, int] = field(default_factory=dict)  # XID code -> times seen since the probe started
    last_xid: int = 0  # 0: none yet
    event_counts: dict[str, int] = field(default_factory=dict)  # NVML critical event kind -> times seen
    util_gpu_pct: int | None = None  # None under MIG (NVML has no device-wide utilisation there)
    util_mem_pct: int | None = None
    enc_util_pct: int | None = None
    dec_util_pct: int | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_w: float | None = None
    power_avg_w: float | None = None  # mean power between energy reads, from the energy counter
    power_limit_w: float | None = None  # enforced limit
    energy_mj: FieldValue | None = None  # counter since driver load
    gpu_temp_c: int | None = None
    mem_temp_c: FieldValue | None = None
    pstate: int | None = None  # 0 (max performance) .. 15
    clock_event_reasons: int | None = None  # bitmask (probes/gpu/fields.py CLOCK_EVENT_REASONS)
    clock_event_reason_names: list[str] | None = None
    throttle_since_ns: int | None = None  # start of the open throttle interval, None when not throttled
    fb_total_mib: int | None = None
    fb_used_mib: int | None = None  # reserved memory not counted (nvmlMemory_v2), like nvidia-smi
    fb_free_mib: int | None = None
    fb_reserved_mib: int | None = None  # None without nvmlMemory_v2
    pcie_tx_bytes_s: float | None = None  # from byte counters, else GPM, else nvmlDeviceGetPcieThroughput
    pcie_rx_bytes_s: float | None = None
    pcie_replay_count: FieldValue | None = None
    nvlink_tx_bytes_s: float | None = None
    nvlink_rx_bytes_s: float | None = None
    ecc_sbe_vol: FieldValue | None = None  # ECC error totals: single/double bit, volatile/aggregate
    ecc_dbe_vol: FieldValue | None = None
    ecc_sbe_agg: FieldValue | None = None
    ecc_dbe_agg: FieldValue | None = None
    remapped_rows_cor: FieldValue | None = None
    remapped_rows_unc: FieldValue | None = None
    row_remap_pending: FieldValue | None = None  # 0/1: waits for a GPU reset
    row_remap_failure: FieldValue | None = None  # 0/1
    gpm: GpmMetrics = field(default_factory=GpmMetrics)
    mig_instances: list[MigState] = field(default_factory=list)
    processes: list[GpuProcess] = field(default_factory=list)


@dataclass(slots=True)
class XidStatus:
    """The NVML event thread that waits for XIDs and other critical events."""

    is_running: bool = False
    error: str = ""  # why it could not start
    registered: dict[int, list[str]] = field(default_factory=dict)  # GPU index -> event kinds registered
    waits: int = 0  # completed waits (event or timeout): shows the thread is alive
    lost_waits: int = 0  # waits that failed because a GPU of the event set was lost (the thread backs off)


@dataclass(slots=True)
class GpuSnapshot:
    t_ns: int = 0
    hostname: str = ""
    driver_version: str = ""
    nvml_version: str = ""
    cuda_driver_version: int | None = None
    gpus: list[GpuState] = field(default_factory=list)  # by index
    xid: XidStatus = field(default_factory=XidStatus)
