"""What a step span says about the GPU: which device (index, UUID) and how long an earlier step's GPU work took.

GPU time comes from a CUDA event pair per step, read back only when `event.query()` says the work is done: the step
loop never waits for the GPU to report it. A small ring bounds the pairs in flight; a step that finds every pair
still pending goes untimed rather than wait.
"""
from __future__ import annotations

from collections import deque
from typing import NamedTuple

import torch


class GpuIdentity(NamedTuple):
    index: int | None  # CUDA ordinal as this process sees it (after CUDA_VISIBLE_DEVICES); None on CPU
    uuid: str | None  # "GPU-<hex uuid>" as NVML spells it (the agent's GPU probe keys devices by it); None on CPU


def gpu_identity(device: torch.device) -> GpuIdentity:
    """The device a rank runs on, as a step span names it."""
    if device.type != "cuda":
        return GpuIdentity(None, None)
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)  # torch >= 2.1
    return GpuIdentity(index, f"GPU-{uuid}" if uuid is not None else None)


class GpuStepTimer:
    """CUDA events around each step's GPU work; `take_done()` returns the newest finished step's GPU time."""

    def __init__(self, device: torch.device, size: int = 8) -> None:
        self.is_enabled = device.type == "cuda"
        self._free: deque[tuple[torch.cuda.Event, torch.cuda.Event]] = deque()
        if self.is_enabled:
            self._free.extend((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                              for _ in range(size))
        self._pending: deque[tuple[int, torch.cuda.Event, torch.cuda.Event]] = deque()
        self._current: tuple[int, torch.cuda.Event, torch.cuda.Event] | None = None

    def start(self, step_id: int) -> None:
        """Mark the start of step `step_id`'s work on the current stream (no-op on CPU or with the ring full)."""
        if not self._free:
            return
        start, end = self._free.popleft()
        start.record()
        self._current = (step_id, start, end)

    def stop(self) -> None:
        """Mark the end of the step started last."""
        if self._current is None:
            return
        self._current[2].record()
        self._pending.append(self._current)
        self._current = None

    def take_done(self) -> tuple[int, float] | None:
        """(step id, GPU ms) of the newest step whose work has finished, or None; never waits for the GPU."""
        done = None
        while self._pending and self._pending[0][2].query():
            step_id, start, end = self._pending.popleft()
            done = (step_id, round(start.elapsed_time(end), 4))
            self._free.append((start, end))
        return done
