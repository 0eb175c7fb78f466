"""Helpers for the kernel-probe tests: scratch cgroups that are always removed, watched child processes, a store
holding one snapshot for the exporter."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.kernel.cgroups import find_mounts
from gpusleuth.probes.records import monotonic_ns

SLEEPY = "import time\nwhile True:\n    time.sleep(0.002)\n"
BUSY = "while True:\n    pass\n"


class SnapshotStore:
    """What a collector reads (agent.store's snapshot()), holding one snapshot: for exporter checks."""

    def __init__(self, snap) -> None:
        self.snap = snap

    def snapshot(self, source: str):
        return self.snap


def v1_mount(controller: str) -> Path | None:
    """Where the cgroup v1 `controller` is mounted here (None: not on v1)."""
    found = find_mounts().v1.get(controller)
    return found[0] if found and found[1] == "/" else None


def v2_mount() -> Path | None:
    found = find_mounts().v2
    return found[0] if found and found[1] == "/" else None


@contextlib.contextmanager
def scratch_cgroup(mount: Path, settings: dict[str, str] | None = None) -> Iterator[Path]:
    """A new cgroup under `mount` with `settings` written (file -> value); on exit its tasks are thawed and moved
    to the root, and the folder removed."""
    path = mount / f"gs-test-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    path.mkdir()
    try:
        for name, value in (settings or {}).items():
            (path / name).write_text(value)
        yield path
    finally:
        thaw(path)
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (mount / "cgroup.procs").write_text(pid)
        for _ in range(50):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.05)


@contextlib.contextmanager
def heavy_cpu_cgroup() -> Iterator[Path | None]:
    """A scratch cgroup with the largest CPU weight (v1 cpu.shares, v2 cpu.weight), or None where neither can be
    set. Its tasks leave the root group, so autogroups (an equal share per session, whatever the nice values) no
    longer pit them against the rest of a shared box: inside it, nice decides."""
    if v1_mount("cpu") is not None:
        with scratch_cgroup(v1_mount("cpu"), {"cpu.shares": "262144"}) as path:
            yield path
    elif v2_mount() is not None and "cpu" in (v2_mount() / "cgroup.controllers").read_text().split():
        with scratch_cgroup(v2_mount(), {"cpu.weight": "10000"}) as path:
            yield path
    else:
        yield None


@contextlib.contextmanager
def child(code: str, cgroup: Path | None = None) -> Iterator[subprocess.Popen]:
    """A Python child running `code` (moved into `cgroup` first if given), stdin and stdout pipes; killed on exit."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(proc.pid))
        yield proc
    finally:
        if cgroup is not None:
            thaw(cgroup)  # a frozen task takes no SIGKILL until thawed
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()


def thaw(cgroup: Path) -> None:
    for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
        if (cgroup / name).exists():
            (cgroup / name).write_text(value)


def watch(probe, pid: int, settle_s: float = 0.2) -> None:
    """Let the child start, watch it, and drop what the probe saw so far."""
    time.sleep(settle_s)
    probe.update_watch(WatchSet(tgids=frozenset({pid})))
    probe.poll(monotonic_ns())
