"""The cuda probe's configuration section, `[probes.cuda]` (README: "CUDA and NCCL uprobes")."""
from __future__ import annotations

from dataclasses import dataclass, field

from gpusleuth.probes.config import ConfigError, check_choice, check_range

LIBRARIES = ("driver", "runtime", "nccl", "gloo")


@dataclass(slots=True)
class CudaConfig:
    interval_s: float = 1.0
    libraries: list[str] = field(default_factory=lambda: list(LIBRARIES))  # which libraries to attach to
    launches: str = "count"  # "count": per-thread counts in the kernel; "off": no launch uprobes at all
    uprobe_path: str = "auto"  # "multi" (uprobe_multi links, Linux 6.6+), "perf" (a perf event per uprobe), "auto"
    rescan_interval_s: float = 2.0  # how often watched processes' maps are read for newly loaded libraries
    gpu_bound_share: float = 0.3  # a host step is GPU-bound when its sync wait is at least this share of it
    straggler_min_ms: float = 1.0  # a collective whose last rank entered this much after the first is an Event
    max_threads: int = 16384  # threads of watched processes tracked (launch counters, calls in progress)
    max_keys: int = 16384  # (process, function, direction, duration bucket, communicator) keys per interval
    max_allocs: int = 65536  # live allocations remembered for their frees (least recently made dropped first)
    max_events_per_poll: int = 20000  # records per poll (syncs, collectives, traced launches); more wait or drop
    max_uprobes: int = 4096  # uprobes (perf events) across all processes; each holds a file descriptor
    recent_steps: int = 64  # host steps kept per thread in the snapshot
    idle_expiry_s: float = 600.0

    def __post_init__(self) -> None:
        check_range("interval_s", self.interval_s, 0.05, 3600)
        for i, lib in enumerate(self.libraries):
            check_choice(f"libraries[{i}]", lib, LIBRARIES)
        check_choice("launches", self.launches, ["count", "off"])
        check_choice("uprobe_path", self.uprobe_path, ["auto", "multi", "perf"])
        check_range("rescan_interval_s", self.rescan_interval_s, 0.1, 3600)
        check_range("gpu_bound_share", self.gpu_bound_share, 0.0, 1.0)
        check_range("straggler_min_ms", self.straggler_min_ms, 0.0, 60_000)
        check_range("max_threads", self.max_threads, 1024, 4_194_304)
        check_range("max_keys", self.max_keys, 1024, 4_194_304)
        check_range("max_allocs", self.max_allocs, 1024, 16_777_216)
        check_range("max_events_per_poll", self.max_events_per_poll, 100, 10_000_000)
        check_range("max_uprobes", self.max_uprobes, 16, 1_000_000)
        check_range("recent_steps", self.recent_steps, 0, 100_000)
        check_range("idle_expiry_s", self.idle_expiry_s, 1, 86400 * 7)
        if not self.libraries:
            raise ConfigError("libraries", f"must name at least one of {', '.join(LIBRARIES)}")
