"""Counters to rates: NVML exposes cumulative counters (energy in mJ, NVLink KiB, PCIe bytes) that can wrap at their
C width or restart when the driver reloads; rates must survive both without ever inventing a number."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpusleuth.probes.gpu.nvml import NA


def counter_delta(prev: int, cur: int, width_bits: int | None = None) -> int | None:
    """Increase from prev to cur. A drop is a wrap when the counter has a known C width and the wrapped increase is
    under half the range; otherwise it is a restart and the increase is unknown (None)."""
    if cur >= prev:
        return cur - prev
    if width_bits is not None:
        wrapped = cur + (1 << width_bits) - prev
        if wrapped < (1 << (width_bits - 1)):
            return wrapped
    return None


@dataclass(slots=True)
class CounterRate:
    """Per-second rate of one counter between consecutive reads; `scale` converts counter units to the rate's unit."""

    scale: float = 1.0
    width_bits: int | None = None
    _value: int | None = None
    _t_ns: int | None = None
    rate: Any = NA

    def update(self, value: Any, t_ns: int) -> Any:
        """Feed a new read (NA allowed) taken at t_ns; returns the latest rate (NA until two reads)."""
        if value is NA or value is None:
            self._value, self._t_ns, self.rate = None, None, NA
            return NA
        value = int(value)
        if self._value is not None and self._t_ns is not None and t_ns > self._t_ns:
            delta = counter_delta(self._value, value, self.width_bits)
            self.rate = NA if delta is None else delta * self.scale * 1e9 / (t_ns - self._t_ns)
        if self._t_ns is None or t_ns > self._t_ns:  # equal timestamps: NVML served a cached value; keep the rate
            self._value, self._t_ns = value, t_ns
        return self.rate
