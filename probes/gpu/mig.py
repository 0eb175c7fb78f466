"""MIG: enumerate the GPU instances of a MIG-enabled GPU and read what NVML reports per instance.

Under MIG, NVML does not report device-wide utilisation (nvmlDeviceGetUtilizationRates, nvmlDeviceGetSamples,
process utilisation answer NOT_SUPPORTED or meaningless values), so the sampler does not report those for a
MIG-enabled GPU at all and says so in status; per instance it reports framebuffer use and GPM metrics (through
nvmlGpmMigSampleGet), labelled like dcgm-exporter (GPU_I_ID, GPU_I_PROFILE). We never change MIG mode.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gpusleuth.probes.gpu.gpm import GpmSampler
from gpusleuth.probes.gpu.nvml import NA, Nvml, as_text, or_none
from gpusleuth.probes.gpu.snapshot import MigState, gpm_metrics

MIG_ENABLE = 1
_PROFILE = re.compile(r"MIG\s+(\S+)\s*$")


def profile_from_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3 MIG 1g.10gb' -> '1g.10gb' (the name NVML gives a MIG device handle)."""
    m = _PROFILE.search(name or "")
    return m.group(1) if m else ""


@dataclass(slots=True)
class MigInstance:
    handle: Any
    gi_id: int
    ci_id: int
    uuid: str
    profile: str
    gpm: GpmSampler | None = None


def is_mig_enabled(lib: Nvml, handle: Any, key: Any) -> bool:
    mode = lib.query("nvmlDeviceGetMigMode", handle, key=(key, "mig_mode"))
    return mode is not NA and int(mode[0]) == MIG_ENABLE


def enumerate_instances(lib: Nvml, handle: Any, key: Any) -> list[MigInstance]:
    """The MIG devices (GPU instance + compute instance) currently configured on a MIG-enabled GPU."""
    count = lib.query("nvmlDeviceGetMaxMigDeviceCount", handle, key=(key, "mig_count"))
    out: list[MigInstance] = []
    for i in range(0 if count is NA else int(count)):
        mh = lib.query("nvmlDeviceGetMigDeviceHandleByIndex", handle, i)  # NOT_FOUND: empty slot -> NA
        if mh is NA:
            continue
        gi = lib.query("nvmlDeviceGetGpuInstanceId", mh)
        ci = lib.query("nvmlDeviceGetComputeInstanceId", mh)
        if gi is NA:
            continue
        name = lib.query("nvmlDeviceGetName", mh)
        uuid = lib.query("nvmlDeviceGetUUID", mh)
        out.append(MigInstance(mh, int(gi), -1 if ci is NA else int(ci), as_text(uuid),
                               profile_from_name(as_text(name))))
    return out


def read_instance(lib: Nvml, inst: MigInstance, memory_version: Any) -> MigState:
    """Framebuffer use (MiB), GPM ratios and GPM link rates of one MIG instance."""
    mem = lib.query("nvmlDeviceGetMemoryInfo", inst.handle, **({"version": memory_version} if memory_version else {}))
    gpm = {k: or_none(v) for k, v in (inst.gpm.read() if inst.gpm is not None else {}).items()}
    out = MigState(inst.gi_id, inst.ci_id, inst.uuid, inst.profile, gpm=gpm_metrics(gpm),
                   pcie_tx_bytes_s=gpm.get("pcie_tx_bytes_s"), pcie_rx_bytes_s=gpm.get("pcie_rx_bytes_s"),
                   nvlink_tx_bytes_s=gpm.get("nvlink_tx_bytes_s"), nvlink_rx_bytes_s=gpm.get("nvlink_rx_bytes_s"))
    if mem is not NA:
        out.fb_used_mib, out.fb_free_mib = mem.used // 1048576, mem.free // 1048576
        out.fb_total_mib = mem.total // 1048576
        out.fb_reserved_mib = getattr(mem, "reserved", 0) // 1048576 if memory_version else None
    return out
