"""cgroup CPU throttling, quota, memory pressure and frozen state as the sched probe reads them.

cgroup v1 is tested for real (this box runs v1 controllers: a CPU quota on a busy child, read through the probe, the
exporter included). cgroup v2 CPU and memory files are tested from a tree made in a temporary folder (a fake: this
box's v2 hierarchy has no controllers, and the GPU hosts that run v2 are not reachable from CI); the v2 freeze is
real, in tests/test_kernel_offcpu.py.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gpusleuth.exporters.sched import SchedCollector
from gpusleuth.probes.kernel.cgroups import CgroupWatch, Mounts, find_mounts, pressure_some_us
from gpusleuth.probes.kernel.sched import SchedConfig, SchedProbe
from gpusleuth.probes.records import monotonic_ns
from tests.kernel_helpers import BUSY, SnapshotStore, child, scratch_cgroup, v1_mount, watch

QUOTA_US, PERIOD_US = 20_000, 100_000


@pytest.mark.root
@pytest.mark.skipif(v1_mount("cpu") is None, reason="no cgroup v1 cpu controller on this host")
def test_v1_cpu_quota_throttles_and_is_reported():
    probe = SchedProbe(SchedConfig())
    probe.start()
    code = "import os\nos.sched_setaffinity(0, {1})\n" + BUSY
    settings = {"cpu.cfs_period_us": str(PERIOD_US), "cpu.cfs_quota_us": str(QUOTA_US)}
    try:
        with scratch_cgroup(v1_mount("cpu"), settings) as cg, child(code, cg) as proc:
            watch(probe, proc.pid)
            t0 = monotonic_ns()
            time.sleep(1.0)
            result = probe.poll(monotonic_ns())
    finally:
        probe.stop()
    path = "/" + cg.name
    [event] = [e for e in result.events if e.kind == "cgroup_throttle"]
    print(f"FIGURE 20 % quota, 1 s busy: {event.attrs['periods']} periods throttled, {event.attrs['ns'] / 1e6:.0f} ms")
    assert event.pid == proc.pid and event.attrs["cgroup"] == path and event.attrs["version"] == 1
    assert 5 <= event.attrs["periods"] <= 13  # 100 ms periods in about 1 s
    assert 0.2e9 <= event.attrs["ns"] <= 1.2e9
    assert (event.attrs["quota_us"], event.attrs["period_us"]) == (QUOTA_US, PERIOD_US)
    assert t0 - 0.5e9 <= event.start_ns < event.end_ns
    samples = {s.series: s for s in result.samples if s.series.startswith("cgroup.cpu")}
    assert samples["cgroup.cpu.nr_throttled"].value == event.attrs["periods"]
    assert samples["cgroup.cpu.nr_throttled"].labels == {"cgroup": path, "pid": str(proc.pid)}
    assert samples["cgroup.cpu.throttled_ns"].value == event.attrs["ns"]
    waits = [e for e in result.events if e.kind == "runq_delay" and e.pid == proc.pid]
    assert waits and all(e.attrs["cgroup_throttled_periods"] == event.attrs["periods"] for e in waits)
    [state] = [c for c in result.snapshot.cgroups if c.path == path]
    registry = CollectorRegistry()
    registry.register(SchedCollector(SnapshotStore(result.snapshot)))
    assert registry.get_sample_value("gpusleuth_cgroup_cpu_throttled_periods_total", {"cgroup": path}) \
        == state.nr_throttled
    assert registry.get_sample_value("gpusleuth_cgroup_cpu_quota_cpus", {"cgroup": path}) == QUOTA_US / PERIOD_US


@pytest.mark.root
@pytest.mark.skipif(v1_mount("memory") is None, reason="no cgroup v1 memory controller on this host")
def test_v1_memory_pressure_is_the_systems():
    with child(BUSY) as proc:
        time.sleep(0.1)
        watch_ = CgroupWatch()
        [state] = watch_.poll({proc.pid: "python"}, monotonic_ns()).states
        after = pressure_some_us(Path("/proc/pressure/memory"))
    assert state.pressure_scope == "system"
    assert state.memory_pressure_some_us is not None and state.memory_pressure_some_us <= after


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def _v2_tree(tmp: Path, throttled: int, usec: int, pressure: int, frozen: int = 0) -> None:
    """A v2 hierarchy: /kubepods/pod1 sets a quota, its container /kubepods/pod1/ctr has none of its own."""
    _write(tmp / "cg", {
        "cgroup.controllers": "cpu memory",
        "kubepods/cpu.max": "max 100000", "kubepods/cpu.stat": "usage_usec 1\nnr_periods 0\nnr_throttled 0\n"
                                                               "throttled_usec 0\n",
        "kubepods/pod1/cpu.max": "50000 100000",
        "kubepods/pod1/cpu.stat": f"usage_usec 9\nnr_periods 40\nnr_throttled {throttled}\nthrottled_usec {usec}\n",
        "kubepods/pod1/ctr/cpu.max": "max 100000",
        "kubepods/pod1/ctr/cpu.stat": f"usage_usec 9\nnr_periods 40\nnr_throttled {throttled // 2}\n"
                                      f"throttled_usec {usec // 2}\n",
        "kubepods/pod1/ctr/memory.pressure": f"some avg10=1.00 avg60=0.50 avg300=0.10 total={pressure}\n"
                                             "full avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        "kubepods/pod1/ctr/cgroup.events": f"populated 1\nfrozen {frozen}\n"})
    _write(tmp / "proc", {"4242/cgroup": "0::/kubepods/pod1/ctr\n"})


def test_v2_tree_throttling_quota_pressure_and_freeze(tmp_path):
    _v2_tree(tmp_path, throttled=10, usec=1000, pressure=500)
    watch_ = CgroupWatch(Mounts(v1={}, v2=(tmp_path / "cg", "/")), proc=tmp_path / "proc",
                         system_pressure=tmp_path / "none")
    first = watch_.poll({4242: "gs-engine"}, 1_000)
    assert not first.samples and not first.events  # a baseline
    assert [(s.path, s.quota_us, s.period_us) for s in first.states] == [
        ("/kubepods/pod1/ctr", None, 100000), ("/kubepods/pod1", 50000, 100000)]  # own, then the ancestor's quota
    _v2_tree(tmp_path, throttled=16, usec=4000, pressure=2500, frozen=1)
    second = watch_.poll({4242: "gs-engine"}, 2_000)
    events = {e.attrs["cgroup"]: e for e in second.events}
    assert events["/kubepods/pod1"].attrs["periods"] == 6 and events["/kubepods/pod1"].attrs["ns"] == 3_000_000
    assert events["/kubepods/pod1/ctr"].attrs["periods"] == 3
    assert (events["/kubepods/pod1"].start_ns, events["/kubepods/pod1"].end_ns) == (1_000, 2_000)
    pressure = [s for s in second.samples if s.series == "cgroup.memory.pressure_some_us"]
    assert [(s.value, s.labels["scope"], s.labels["cgroup"]) for s in pressure] == [
        (2000.0, "cgroup", "/kubepods/pod1/ctr")]
    assert second.frozen_pids == {4242} and watch_.was_frozen(4242, 1_500, 2_500)
    assert not watch_.was_frozen(4242, 0, 1_500)


def test_mountinfo_v1_controllers_and_a_container_root(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
        "31 25 0:27 /docker/abc /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        "33 25 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n")
    mounts = find_mounts(info)
    assert set(mounts.v1) == {"cpu", "cpuacct", "memory"}
    assert mounts.v2 == (Path("/sys/fs/cgroup/unified"), "/")
    version, chain = mounts.chain_of("memory", {"memory": "/docker/abc/inner"})
    assert version == 1 and chain[0] == ("/docker/abc/inner", Path("/sys/fs/cgroup/memory/inner"))
    assert mounts.chain_of("cpu", {"cpu": "/a/b"})[1] == [("/a/b", Path("/sys/fs/cgroup/cpu,cpuacct/a/b")),
                                                         ("/a", Path("/sys/fs/cgroup/cpu,cpuacct/a")),
                                                         ("/", Path("/sys/fs/cgroup/cpu,cpuacct"))]
