"""CPU throttling, quota, memory pressure and freezer state of the watched processes' cgroups, v1 and v2.

Read from the cgroup files each poll of the sched probe, which owns this (it already polls per watched process
every interval, and its off-CPU states need the freezer state: a cgroup v2 freeze looks like a plain sleep to the
scheduler tracepoints). For each watched process: its own cgroup of the CPU controller's hierarchy, and each
ancestor that sets a CPU quota (a pod's limit usually sits one level up from its container's):
- CPU: v1 cpu.stat nr_periods / nr_throttled / throttled_time (ns) with cpu.cfs_quota_us / cpu.cfs_period_us;
  v2 cpu.stat nr_periods / nr_throttled / throttled_usec with cpu.max.
- memory pressure: v2 memory.pressure of the cgroup (PSI "some" total, us); where the memory controller is on v1
  there is no per-cgroup PSI, so /proc/pressure/memory, labelled scope "system".
- frozen: v1 freezer.state FROZEN, or v2 cgroup.events "frozen 1" (both are looked at on hybrid hosts).

Samples (increase since the previous poll, labels {cgroup, pid}, memory pressure also {scope}):
`cgroup.cpu.throttled_ns`, `cgroup.cpu.nr_throttled`, `cgroup.memory.pressure_some_us`; a `cgroup_throttle`
Event when nr_throttled grew in a poll. No library reads these files for both versions (psutil does not), hence
the small readers here. Paths are injectable so a test can give a cgroup tree made in a temporary folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from gpusleuth.probes.kernel.snapshot import CgroupState
from gpusleuth.probes.records import Event, Sample

MAX_DEPTH = 16  # ancestors looked at for a quota
MAX_PIDS = 256  # watched processes looked at per poll (the rest are skipped: each costs a few file reads)
FROZEN_POLLS_KEPT = 64


@dataclass(slots=True, frozen=True)
class Mounts:
    v1: dict[str, tuple[Path, str]] = field(default_factory=dict)  # controller -> (mount point, its root)
    v2: tuple[Path, str] | None = None

    def chain_of(self, controller: str, cgroups: dict[str, str]) -> tuple[int, list[tuple[str, Path]]]:
        """A process's cgroup for `controller` ("" = its v2 one) and its ancestors inside the mount, as
        (path, folder) from the cgroup up, with the hierarchy's version; (0, []) where no mount has it."""
        if controller in self.v1 and controller in cgroups:
            (mount, root), path, version = self.v1[controller], cgroups[controller], 1
        elif self.v2 is not None and "" in cgroups and (not controller or controller not in self.v1):
            (mount, root), path, version = self.v2, cgroups[""], 2
        else:
            return 0, []
        rel = path[len(root):] if root != "/" and path.startswith(root) else path
        parts = [p for p in rel.split("/") if p]
        chain = []
        for n in range(len(parts), max(-1, len(parts) - MAX_DEPTH), -1):
            chain.append(("/" + "/".join(parts[:n]) if root == "/" else root + "".join("/" + p for p in parts[:n]),
                          mount.joinpath(*parts[:n])))
        return version, chain


def find_mounts(mountinfo: Path = Path("/proc/self/mountinfo"), known: Path = Path("/proc/cgroups")) -> Mounts:
    """cgroup v1 mounts by controller and the v2 mount, from mountinfo (the first mount of each wins); a v1 mount's
    controllers are its super options that /proc/cgroups names (the others are flags: xattr, noprefix, ...)."""
    v1: dict[str, tuple[Path, str]] = {}
    v2 = None
    try:
        lines = mountinfo.read_text().splitlines()
        controllers = {ln.split()[0] for ln in known.read_text().splitlines() if ln and not ln.startswith("#")}
    except OSError:
        return Mounts()
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point = fields[3], Path(fields[4])
        if tail[0] == "cgroup2" and v2 is None:
            v2 = (point, root)
        elif tail[0] == "cgroup":
            for opt in tail[2].split(","):
                if opt in controllers:
                    v1.setdefault(opt, (point, root))
    return Mounts(v1, v2)


def cgroups_of(pid: int, proc: Path = Path("/proc")) -> dict[str, str]:
    """controller -> cgroup path of a process ("" for its v2 cgroup); {} if it is gone."""
    out: dict[str, str] = {}
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _keyed(text: str | None) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


@dataclass(slots=True)
class CpuStat:
    nr_periods: int = 0
    nr_throttled: int = 0
    throttled_ns: int = 0
    quota_us: int | None = None
    period_us: int | None = None


def read_cpu(folder: Path, version: int) -> CpuStat | None:
    """The cgroup's throttling counters and quota; None where it has no CPU controller files."""
    stat = _keyed(_read(folder / "cpu.stat"))
    if "nr_throttled" not in stat:
        return None
    if version == 1:
        quota, period = _keyed_int(folder / "cpu.cfs_quota_us"), _keyed_int(folder / "cpu.cfs_period_us")
        throttled = stat.get("throttled_time", stat.get("throttled_usec", 0) * 1000)
    else:
        fields = (_read(folder / "cpu.max") or "max").split()
        quota = None if fields[0] == "max" else int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else None
        throttled = stat.get("throttled_usec", 0) * 1000
    return CpuStat(stat.get("nr_periods", 0), stat["nr_throttled"], throttled,
                   quota if quota is not None and quota >= 0 else None, period)


def _keyed_int(path: Path) -> int | None:
    text = _read(path)
    return int(text.strip()) if text and text.strip().lstrip("-").isdigit() else None


def pressure_some_us(path: Path) -> int | None:
    """The "some" total (us) of a PSI file."""
    for line in (_read(path) or "").splitlines():
        if line.startswith("some "):
            for item in line.split()[1:]:
                if item.startswith("total="):
                    return int(item[6:])
    return None


def is_frozen(mounts: Mounts, cgroups: dict[str, str]) -> bool:
    """v1 freezer.state FROZEN (FREEZING is not yet; a frozen parent shows in its children), or v2 cgroup.events
    "frozen 1" (also set below a frozen parent)."""
    _, chain = mounts.chain_of("freezer", cgroups) if "freezer" in mounts.v1 else (0, [])
    if chain and (_read(chain[0][1] / "freezer.state") or "").strip() == "FROZEN":
        return True
    _, chain = mounts.chain_of("", cgroups) if mounts.v2 is not None else (0, [])
    return bool(chain) and _keyed(_read(chain[0][1] / "cgroup.events")).get("frozen") == 1


@dataclass(slots=True)
class CgroupPoll:
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    states: list[CgroupState] = field(default_factory=list)
    frozen_pids: set[int] = field(default_factory=set)


class CgroupWatch:
    """Reads the watched processes' cgroups each poll; turns counter growth into Samples and throttle Events."""

    def __init__(self, mounts: Mounts | None = None, proc: Path = Path("/proc"),
                 system_pressure: Path = Path("/proc/pressure/memory")) -> None:
        self.mounts = find_mounts() if mounts is None else mounts
        self._proc = proc
        self._system_pressure = system_pressure
        self._last: dict[tuple[int, str], tuple[int, CgroupState]] = {}  # (version, path) -> (t_ns, state)
        self._frozen_seen: dict[int, list[int]] = {}  # pid -> the last polls (ns) that found its cgroup frozen

    def poll(self, comms: dict[int, str], now_ns: int) -> CgroupPoll:
        """`comms`: watched pid -> comm. Samples, Events and states of their cgroups as of now."""
        out, seen = CgroupPoll(), {}
        groups: dict[tuple, list[int]] = {}  # processes in the same cgroups: their files are read once
        for pid in list(comms)[:MAX_PIDS]:
            cgroups = cgroups_of(pid, self._proc)
            if cgroups:
                groups.setdefault(tuple(sorted(cgroups.items())), []).append(pid)
        for key, pids in groups.items():
            cgroups = dict(key)
            if is_frozen(self.mounts, cgroups):
                out.frozen_pids.update(pids)
            for state in self._states_of(cgroups):
                seen.setdefault((state.version, state.path), state).pids.extend(pids)
        for key, state in seen.items():
            self._compare(key, state, comms, now_ns, out)
            out.states.append(state)
        self._last = {k: v for k, v in self._last.items() if k in seen}
        for pid in out.frozen_pids:
            times = self._frozen_seen.setdefault(pid, [])
            times.append(now_ns)
            del times[:-FROZEN_POLLS_KEPT]
        for pid in [p for p in self._frozen_seen if p not in comms]:
            del self._frozen_seen[pid]
        return out

    def path_of(self, pid: int) -> str:
        """The process's cgroup in the CPU controller's hierarchy (its v2 one where that is not on v1); '' if gone."""
        cgroups = cgroups_of(pid, self._proc)
        return cgroups.get("cpu" if "cpu" in self.mounts.v1 else "", "")

    def was_frozen(self, pid: int, start_ns: int, end_ns: int) -> bool:
        """Whether `pid`'s cgroup was seen frozen at a poll inside [start_ns, end_ns]."""
        return any(start_ns <= t <= end_ns for t in self._frozen_seen.get(pid, ()))

    def _states_of(self, cgroups: dict[str, str]) -> list[CgroupState]:
        version, chain = self.mounts.chain_of("cpu", cgroups)
        pressure, scope = self._pressure(cgroups)
        states = []
        for depth, (path, folder) in enumerate(chain):
            cpu = read_cpu(folder, version)
            if cpu is not None and (depth == 0 or cpu.quota_us is not None):
                own = depth == 0
                states.append(CgroupState(path, version, [], cpu.nr_periods, cpu.nr_throttled, cpu.throttled_ns,
                                          cpu.quota_us, cpu.period_us, pressure if own else None,
                                          scope if own else ""))
        return states

    def _pressure(self, cgroups: dict[str, str]) -> tuple[int | None, str]:
        if "memory" not in self.mounts.v1:
            _, chain = self.mounts.chain_of("memory", cgroups)
            value = pressure_some_us(chain[0][1] / "memory.pressure") if chain else None
            if value is not None:
                return value, "cgroup"
        return pressure_some_us(self._system_pressure), "system"

    def _compare(self, key, state: CgroupState, comms: dict[int, str], now_ns: int, out: CgroupPoll) -> None:
        last = self._last.get(key)
        self._last[key] = (now_ns, state)
        if last is None:
            return  # a baseline: the counters say nothing about this poll yet
        t0, old = last
        periods, ns = state.nr_throttled - old.nr_throttled, state.throttled_ns - old.throttled_ns
        grew = {"cgroup.cpu.throttled_ns": ns, "cgroup.cpu.nr_throttled": periods}
        if state.memory_pressure_some_us is not None and old.memory_pressure_some_us is not None:
            grew["cgroup.memory.pressure_some_us"] = state.memory_pressure_some_us - old.memory_pressure_some_us
        for pid in state.pids:
            labels = {"cgroup": state.path, "pid": str(pid)}
            for series, value in grew.items():
                extra = {"scope": state.pressure_scope} if series.startswith("cgroup.memory") else {}
                out.samples.append(Sample(series, now_ns, float(value), {**labels, **extra}))
        if periods > 0:
            pid = state.pids[0]
            out.events.append(Event(kind="cgroup_throttle", source="sched", start_ns=t0, end_ns=now_ns, pid=pid,
                                    comm=comms.get(pid, ""),
                                    attrs={"cgroup": state.path, "version": state.version, "periods": periods,
                                           "ns": ns, "quota_us": state.quota_us, "period_us": state.period_us,
                                           "pids": list(state.pids)}))
