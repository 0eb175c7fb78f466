"""MIG: enumerate the GPU instances of a MIG-enabled GPU and read what NVML reports per instance.

Under MIG, NVML does not report device-wide utilisation (nvmlDeviceGetUtilizationRates, nvmlDeviceGetSamples,
process utilisation answer NOT_SUPPORTED or meaningless values), so the sampler does not report those for a
MIG-enabled GPU at all and says so in status; per instance it reports framebuffer use and GPM metrics (through
nvmlGpmMigSampleGet), labelled like dcgm-exporter (GPU_I_ID, GPU_I_PROFILE). We never change MIG mode.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gpusleuth.probes.gpu.gpm import GpmSampler
from gpusleuth.probes.gpu.nvml import NA, Nvml, as_text, or_none

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
    last: dict[str, Any] = field(default_factory=dict)


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


def read_instance(lib: Nvml, inst: MigInstance, memory_version: Any) -> dict[str, Any]:
    """Framebuffer use (MiB) and GPM ratios of one MIG instance."""
    mem = lib.query("nvmlDeviceGetMemoryInfo", inst.handle, **({"version": memory_version} if memory_version else {}))
    out: dict[str, Any] = {"gi_id": inst.gi_id, "ci_id": inst.ci_id, "uuid": inst.uuid, "profile": inst.profile,
                           "fb_used_mib": None, "fb_free_mib": None, "fb_reserved_mib": None, "fb_total_mib": None}
    if mem is not NA:
        out.update(fb_used_mib=mem.used // 1048576, fb_free_mib=mem.free // 1048576,
                   fb_total_mib=mem.total // 1048576,
                   fb_reserved_mib=getattr(mem, "reserved", 0) // 1048576 if memory_version else None)
    gpm = inst.gpm.read() if inst.gpm is not None else {}
    out["gpm"] = {k: or_none(v) for k, v in gpm.items()}
    return out
