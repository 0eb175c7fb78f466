"""The detectors, one module per cause, in the order they claim time (most specific evidence first): where two
findings cover the same nanoseconds of a request's path, the earlier one keeps them (attribution.py). Run-queue
waits come before slow syscalls and reclaim: time a thread spent runnable inside a syscall was not I/O.

Each module has `CAUSE` and `detect(ctx: Context) -> list[Finding]`.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.detectors import (batch_interference, blocking_io, cgroup_throttling, cpu_contention,
                                                 engine_stall, gc_pause, gil_contention, gpu_clocks, gpu_contention,
                                                 gpu_error, memory_reclaim, network, process_frozen, queueing,
                                                 softirq, tp_straggler)

DETECTORS = (process_frozen, cgroup_throttling, cpu_contention, memory_reclaim, blocking_io, softirq, gc_pause,
             gil_contention, engine_stall, network, tp_straggler, gpu_error, gpu_contention, gpu_clocks, queueing,
             batch_interference)
