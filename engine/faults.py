"""Fault hooks for diagnosis tests, all off by default; changeable at run time (POST /debug/faults).

- allreduce_delay_ms: rank `rank` waits this long before the first all-reduce of every step, so the other ranks
  stall inside NCCL/gloo (a straggling tensor-parallel rank). Steps run eagerly (no CUDA graphs) while it is on.
- scheduler_sleep_ms: the scheduler thread sleeps this long every step (a slow host loop).
- gpu_ballast_gib: rank `rank` holds this much extra device memory (memory pressure).
- fsync_mb / fsync_every_steps: the scheduler thread writes fsync_mb MiB to a file and fsyncs it every N steps
  (a stalled syscall on the engine's hot thread). The file has no name (O_TMPFILE, or unlinked at once), so it
  is gone on every exit path, SIGKILL included.
- gc_pause_ms / gc_every_steps: every N steps the scheduler thread runs a real full (generation 2) garbage
  collection of about gc_pause_ms: the process keeps a ballast of live objects, sized on this host when the drill is
  set, for the collector to walk (python_faults.GcPause; setting it takes 4 to 10 pauses, and up to ~4 GiB of
  memory at 1000 ms). The engine's gc spans show it as any collection.
- gil_hog_threads: that many threads (comm `gs-gil-hog`) in the engine process spin on pure-Python work, so the
  step thread waits for the GIL whenever it wants to run Python (GIL contention).
The Python drills act in rank 0's process (the one with the HTTP server and the scheduler thread).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from gpusleuth.engine.python_faults import GcPause, GilHogs
from gpusleuth.probes.config import ConfigError, check_range


@dataclass(slots=True)
class FaultConfig:
    rank: int = 0  # the rank per-rank faults (all-reduce delay, ballast) apply to
    allreduce_delay_ms: float = 0.0
    scheduler_sleep_ms: float = 0.0
    gpu_ballast_gib: float = 0.0
    fsync_mb: int = 0
    fsync_every_steps: int = 1
    fsync_dir: str = ""  # empty = the system temp directory
    gc_pause_ms: float = 0.0
    gc_every_steps: int = 10
    gil_hog_threads: int = 0

    def __post_init__(self) -> None:
        check_range("rank", self.rank, 0, 63)
        check_range("allreduce_delay_ms", self.allreduce_delay_ms, 0, 60_000)
        check_range("scheduler_sleep_ms", self.scheduler_sleep_ms, 0, 60_000)
        check_range("gpu_ballast_gib", self.gpu_ballast_gib, 0, 1024)
        check_range("fsync_mb", self.fsync_mb, 0, 4096)
        check_range("fsync_every_steps", self.fsync_every_steps, 1, 1_000_000)
        check_range("gc_pause_ms", self.gc_pause_ms, 0, 1000)
        check_range("gc_every_steps", self.gc_every_steps, 1, 1_000_000)
        check_range("gil_hog_threads", self.gil_hog_threads, 0, 64)
        if self.fsync_dir and not os.path.isdir(self.fsync_dir):
            raise ConfigError("fsync_dir", f"{self.fsync_dir} is not a directory")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: "FaultConfig | None" = None) -> "FaultConfig":
        """`base` updated with `data`; unknown keys or wrong types raise ConfigError naming the key."""
        merged = (base or cls()).to_dict()
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in merged:
                raise ConfigError(key, f"unknown fault; allowed: {', '.join(merged)}")
            want = {"int": int, "float": (int, float), "str": str}[str(types[key])]
            if isinstance(value, bool) or not isinstance(value, want):
                raise ConfigError(key, f"expected {types[key]}, got {type(value).__name__}")
            merged[key] = value
        return cls(**merged)


class RankFaults:
    """Per-rank effects (all-reduce delay, ballast) of the current FaultConfig."""

    def __init__(self, rank: int, device: torch.device) -> None:
        self.rank, self.device = rank, device
        self.config = FaultConfig()
        self._ballast: torch.Tensor | None = None
        self._has_delayed = False

    def update(self, config: FaultConfig) -> None:
        self.config = config
        gib = config.gpu_ballast_gib if config.rank == self.rank else 0.0
        self._ballast = None
        if gib > 0:
            self._ballast = torch.ones(int(gib * (1 << 30)), dtype=torch.uint8, device=self.device)

    @property
    def is_delaying(self) -> bool:
        return self.config.allreduce_delay_ms > 0 and self.config.rank == self.rank

    def begin_step(self) -> None:
        self._has_delayed = False

    def pre_all_reduce(self) -> None:
        """Hook run before each all-reduce: the first one of a step waits on the faulty rank."""
        if self._has_delayed or not self.is_delaying:
            return
        self._has_delayed = True
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the delay then really holds back this rank's collective
        time.sleep(self.config.allreduce_delay_ms / 1000.0)


class SchedulerFaults:
    """Scheduler-thread and engine-process effects (sleep, fsync stall, GC pause, GIL hogs) of the current
    FaultConfig."""

    def __init__(self) -> None:
        self.config = FaultConfig()
        self._num_steps = 0
        self._fd: int | None = None  # the fsync drill's file (unnamed: see open_unnamed)
        self._fd_dir = ""
        self._fd_lock = threading.Lock()
        self._is_closed = False
        self.gc_pause = GcPause()
        self.gil_hogs = GilHogs()

    def update(self, config: FaultConfig) -> None:
        self.config = config
        self.gc_pause.set(config.gc_pause_ms)
        self.gil_hogs.set(config.gil_hog_threads)

    def on_step(self) -> None:
        cfg = self.config
        self._num_steps += 1
        if cfg.scheduler_sleep_ms:
            time.sleep(cfg.scheduler_sleep_ms / 1000.0)
        if cfg.fsync_mb and self._num_steps % cfg.fsync_every_steps == 0:
            self._fsync(cfg.fsync_mb, cfg.fsync_dir or tempfile.gettempdir())
        if cfg.gc_pause_ms and self._num_steps % cfg.gc_every_steps == 0:
            self.gc_pause.collect()

    def _fsync(self, mb: int, directory: str) -> None:
        with self._fd_lock:  # close() may come from another thread while a step writes
            if self._is_closed:
                return
            if self._fd is not None and self._fd_dir != directory:
                self._close_file()
            if self._fd is None:
                self._fd, self._fd_dir = open_unnamed(directory), directory
            chunk = os.urandom(1 << 20)  # fresh bytes each time so the page cache really has to write back
            for i in range(mb):
                os.pwrite(self._fd, chunk, i << 20)
            os.fsync(self._fd)

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self.gil_hogs.set(0)
        self.gc_pause.set(0)
        with self._fd_lock:
            self._is_closed = True
            self._close_file()


def open_unnamed(directory: str) -> int:
    """A read-write descriptor of a file in `directory` that has no name, so no exit path (SIGKILL, a crash, the
    OOM killer) can leave it behind: O_TMPFILE where the filesystem has it, else a named file unlinked at once
    (`gpusleuth-engine-fault-<pid>.bin`, visible for an instant). Writes and fsync reach the disk as for any file:
    the inode lives until the descriptor closes."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
    except (AttributeError, IsADirectoryError, OSError):  # no O_TMPFILE here (old kernel, some filesystems)
        path = os.path.join(directory, f"gpusleuth-engine-fault-{os.getpid()}.bin")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.unlink(path)
        return fd
