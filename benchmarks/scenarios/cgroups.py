"""cgroups for the fault suite, v1 and v2: a group made under the runner's own cgroup, the knobs the faults turn
(CPU quota and weight, freeze, memory limit, block-device write limit), its usage counters, and removal.

v1 (this CPU box, CI): one directory per controller (cpu, memory, freezer, blkio), each under the runner's own path
in that hierarchy; v2 (GPU hosts): one directory under the root, where the no-internal-processes rule does not
apply, with +cpu +memory +io enabled on the way down. Written by hand because no maintained library covers v1 and
v2 knobs alike; every write goes through `_write`, whose error names the file.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpu", "memory", "freezer", "blkio")
MAX_SHARES = 262144  # v1 cpu.shares ceiling


class CgroupError(RuntimeError):
    """A cgroup file could not be written: the message names it and the value."""


def version() -> int:
    """2 when the unified hierarchy carries the cpu controller, else 1 (legacy hierarchies)."""
    controllers = ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return 2
    if (ROOT / "cpu").is_dir():
        return 1
    raise CgroupError(f"no cpu cgroup controller under {ROOT} (neither v1 nor v2 with cpu)")


def _own_path(controller: str) -> str:
    """The runner's own cgroup path in the v1 hierarchy of `controller` (from /proc/self/cgroup)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return "/"


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from None


class Group:
    """One cgroup (in every hierarchy the faults use); `name` may be nested ("gs-scn-123/engine")."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = version()
        if self.version == 2:
            self.dirs = {"all": ROOT / name}
        else:
            self.dirs = {c: ROOT / c / _own_path(c).lstrip("/") / name for c in V1_CONTROLLERS}

    @property
    def path(self) -> str:
        """The path a process in it shows in /proc/PID/cgroup (cpu hierarchy on v1)."""
        d = self.dirs.get("all") or self.dirs["cpu"]
        return "/" + str(d.relative_to(ROOT / ("" if self.version == 2 else "cpu")))

    def _dir(self, controller: str) -> Path:
        return self.dirs["all"] if self.version == 2 else self.dirs[controller]

    def create(self) -> "Group":
        for d in self.dirs.values():
            if self.version == 2:
                self._enable_v2(d)
            d.mkdir(parents=True, exist_ok=True)
        return self

    def _enable_v2(self, target: Path) -> None:
        """+cpu +memory +io (those offered) in each ancestor's subtree_control, so `target` gets the knobs."""
        parts = target.relative_to(ROOT).parts
        for i in range(len(parts)):
            parent = ROOT.joinpath(*parts[:i])
            parent.mkdir(exist_ok=True)
            have = (parent / "cgroup.subtree_control").read_text().split()
            offered = (parent / "cgroup.controllers").read_text().split()  # io may be absent (no block cgroup)
            missing = [c for c in ("cpu", "memory", "io") if c not in have and c in offered]
            if missing:
                _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))

    def add(self, pid: int) -> None:
        """Move process `pid` (all its threads) into this group in every hierarchy."""
        for d in self.dirs.values():
            _write(d / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        d = next(iter(self.dirs.values()))
        try:
            return [int(x) for x in (d / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    # ---- knobs ------------------------------------------------------------------------------------------------
    def set_cpu_quota(self, fraction: float | None, period_us: int = 100_000) -> None:
        """Limit the group to `fraction` of one CPU per period (None: no limit)."""
        quota = -1 if fraction is None else max(1000, int(fraction * period_us))
        if self.version == 2:
            _write(self._dir("cpu") / "cpu.max", f"{'max' if quota < 0 else quota} {period_us}")
        else:
            _write(self._dir("cpu") / "cpu.cfs_period_us", str(period_us))
            _write(self._dir("cpu") / "cpu.cfs_quota_us", str(quota))

    def set_cpu_weight(self, weight: int) -> None:
        """CPU weight in v2 units (1..10000, default 100); v1 gets the matching cpu.shares (default 1024)."""
        if self.version == 2:
            _write(self._dir("cpu") / "cpu.weight", str(weight))
        else:
            _write(self._dir("cpu") / "cpu.shares", str(min(MAX_SHARES, max(2, weight * 1024 // 100))))

    def freeze(self, is_frozen: bool, timeout_s: float = 5.0) -> None:
        """Freeze or thaw every task of the group; returns once the kernel says it is done."""
        if self.version == 2:
            _write(self._dir("freezer") / "cgroup.freeze", "1" if is_frozen else "0")
            want, read = f"frozen {int(is_frozen)}", lambda: (self._dir("freezer") / "cgroup.events").read_text()
        else:
            _write(self._dir("freezer") / "freezer.state", "FROZEN" if is_frozen else "THAWED")
            want, read = ("FROZEN" if is_frozen else "THAWED"), lambda: (
                self._dir("freezer") / "freezer.state").read_text()
        deadline = time.monotonic() + timeout_s
        while want not in read() and time.monotonic() < deadline:
            time.sleep(0.001)

    def memory_usage(self) -> dict[str, int]:
        """{anon, file, usage} bytes charged to the group."""
        d = self._dir("memory")
        stat = dict(line.split() for line in (d / "memory.stat").read_text().splitlines())
        if self.version == 2:
            usage = int((d / "memory.current").read_text())
            return {"anon": int(stat["anon"]), "file": int(stat["file"]), "usage": usage}
        usage = int((d / "memory.usage_in_bytes").read_text())
        return {"anon": int(stat["total_rss"]), "file": int(stat["total_cache"]), "usage": usage}

    def set_memory_limit(self, limit: int | None) -> None:
        """Squeeze the group to `limit` bytes (None: unlimited). v2 uses memory.high (reclaim and throttling, never
        the OOM killer); v1 has only a hard limit, so its OOM killer is disabled for the group: a task that cannot
        get memory waits instead of dying (the squeeze is bounded and lifted at the end of the window)."""
        d = self._dir("memory")
        if self.version == 2:
            _write(d / "memory.high", "max" if limit is None else str(limit))
            return
        _write(d / "memory.oom_control", "1")
        _write(d / "memory.limit_in_bytes", "-1" if limit is None else str(limit))

    def memory_events(self) -> dict[str, int]:
        """Counters of limit hits: v1 failcnt and under_oom, v2 memory.events high/max/oom."""
        d = self._dir("memory")
        if self.version == 2:
            return {k: int(v) for k, v in (line.split() for line in (d / "memory.events").read_text().splitlines())}
        oom = dict(line.split() for line in (d / "memory.oom_control").read_text().splitlines())
        return {"failcnt": int((d / "memory.failcnt").read_text()), "under_oom": int(oom.get("under_oom", 0))}

    def set_write_bps(self, device: str, bps: int | None) -> None:
        """Limit writes of the group to block device `device` ("MAJ:MIN") to `bps` bytes/s (None: lift)."""
        if self.version == 2:
            _write(self._dir("blkio") / "io.max", f"{device} wbps={'max' if bps is None else bps}")
        else:
            _write(self._dir("blkio") / "blkio.throttle.write_bps_device", f"{device} {0 if bps is None else bps}")

    def cpu_stat(self) -> dict[str, int]:
        """cpu.stat counters (nr_periods, nr_throttled, throttled time in ns)."""
        stat = dict(line.split() for line in (self._dir("cpu") / "cpu.stat").read_text().splitlines())
        ns = int(stat["throttled_usec"]) * 1000 if "throttled_usec" in stat else int(stat.get("throttled_time", 0))
        return {"nr_periods": int(stat.get("nr_periods", 0)), "nr_throttled": int(stat.get("nr_throttled", 0)),
                "throttled_ns": ns}

    def reset(self) -> None:
        """Every knob back to its default (thawed, no quota, default weight, no memory or io limit)."""
        for undo in (lambda: self.freeze(False), lambda: self.set_cpu_quota(None), lambda: self.set_cpu_weight(100),
                     lambda: self.set_memory_limit(None)):
            try:
                undo()
            except (CgroupError, OSError):
                pass  # a controller this host lacks: nothing was set there either

    def remove(self) -> None:
        """Thaw, kill what is still inside (only our own processes live here), and rmdir, deepest first."""
        self.reset()
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)  # killed tasks take a moment to leave
