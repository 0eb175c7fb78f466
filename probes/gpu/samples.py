"""NVML's own sample buffers (nvmlDeviceGetSamples): GPU utilisation and board power at the driver's sampling rate,
read on the detail interval so the store has sub-second detail between polls around an incident.

NVML stamps each sample with wall-clock microseconds; we convert on intake to CLOCK_MONOTONIC ns with the offset
read at that moment (the agent's one clock). NOT_FOUND means "nothing newer than the timestamp we passed".
"""
from __future__ import annotations

from typing import Any

from gpusleuth.probes.gpu.fields import sample_value
from gpusleuth.probes.gpu.nvml import NA, Nvml
from gpusleuth.probes.records import Sample

# series name -> (NVML sampling-type constant, fallback value, scale to our unit)
SAMPLE_TYPES: dict[str, tuple[str, int, float]] = {
    "gpu.util_pct.nvml": ("NVML_GPU_UTILIZATION_SAMPLES", 1, 1.0),
    "gpu.power_w.nvml": ("NVML_TOTAL_POWER_SAMPLES", 0, 0.001),  # mW -> W
}


def wall_us_to_mono_ns(t_us: int, wall_offset_ns: int) -> int:
    """NVML wall-clock µs -> CLOCK_MONOTONIC ns, given wall_offset_ns = time_ns() - monotonic_ns()."""
    return int(t_us) * 1000 - wall_offset_ns


class SampleReader:
    """New nvmlDeviceGetSamples entries of one GPU as Samples on the monotonic clock."""

    def __init__(self, lib: Nvml, handle: Any, key: Any, labels: dict[str, str]) -> None:
        self.lib, self.handle, self.key, self.labels = lib, handle, key, labels
        self._last_us = {series: 0 for series in SAMPLE_TYPES}

    def read(self, wall_offset_ns: int) -> list[Sample]:
        out: list[Sample] = []
        for series, (const, fallback, scale) in SAMPLE_TYPES.items():
            got = self.lib.query("nvmlDeviceGetSamples", self.handle, self.lib.const(const, fallback),
                                 self._last_us[series], key=(self.key, series), no_data=(None, []))
            if got is NA:
                continue
            value_type, samples = got
            last = self._last_us[series]
            for s in samples:
                t_us = int(s.timeStamp)
                value = sample_value(value_type, s)
                if t_us <= last or value is NA:  # NVML can hand back zeroed slots or ones we already have
                    continue
                out.append(Sample(series, wall_us_to_mono_ns(t_us, wall_offset_ns), value * scale, self.labels))
                self._last_us[series] = max(self._last_us[series], t_us)
        return out
