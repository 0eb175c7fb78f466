"""Off-CPU states of watched threads, for real (root, eBPF, real cgroups): SIGSTOP is T, a cgroup v1 freeze is
"frozen" (the tracepoint alone says D), a cgroup v2 freeze is "frozen" (the scheduler says S), fsync waits are D,
a hot thread's every sleep is an event; and each stuck state is in the snapshot's `ongoing` while it lasts."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
from prometheus_client import CollectorRegistry

from gpusleuth.exporters.sched import SchedCollector
from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.kernel.sched import SchedConfig, SchedProbe
from gpusleuth.probes.records import monotonic_ns
from tests.kernel_helpers import BUSY, SLEEPY, SnapshotStore, child, scratch_cgroup, v1_mount, v2_mount, watch

pytestmark = pytest.mark.root
HOLD_S = 0.3


@pytest.fixture(scope="module")
def probe():
    p = SchedProbe(SchedConfig())
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def kernel_only_probe():
    """Without the cgroup reader: whatever says "frozen" here came from the kernel."""
    p = SchedProbe(SchedConfig(has_cgroups=False))
    p.start()
    yield p
    p.stop()


def _hold(probe, pid: int, stop, resume):
    """stop(); poll while held (after 2/3 of HOLD_S); resume(); poll again. Returns (mid poll, final poll, t0)."""
    t0 = monotonic_ns()
    stop()
    try:
        time.sleep(HOLD_S * 2 / 3)
        mid = probe.poll(monotonic_ns())
        time.sleep(HOLD_S / 3)
    finally:
        resume()
    time.sleep(0.1)
    return mid, probe.poll(monotonic_ns()), t0


def _offcpu(result, pid: int, min_ms: float = 100):
    return [e for e in result.events if e.kind == "offcpu" and e.pid == pid and e.duration_ns >= min_ms * 1e6]


def _ongoing(result, pid: int):
    return [o for o in result.snapshot.ongoing if o.pid == pid]


@pytest.mark.parametrize("code", [SLEEPY, BUSY], ids=["sleeping", "running"])
def test_sigstop_is_state_T_and_ongoing_while_stopped(probe, code):
    with child(code) as proc:
        watch(probe, proc.pid)
        mid, end, t0 = _hold(probe, proc.pid, lambda: os.kill(proc.pid, signal.SIGSTOP),
                             lambda: os.kill(proc.pid, signal.SIGCONT))
    ongoing = _ongoing(mid, proc.pid)
    assert [o.state for o in ongoing] == ["T"], mid.snapshot.ongoing
    assert t0 <= ongoing[0].since_ns < t0 + 50e6 and ongoing[0].tid == proc.pid
    events = _offcpu(mid, proc.pid) + _offcpu(end, proc.pid)
    print(f"FIGURE SIGSTOP {HOLD_S * 1e3:.0f} ms -> offcpu {[(e.attrs['state'], e.duration_ns / 1e6) for e in events]}")
    assert [e.attrs["state"] for e in events] == ["T"]
    assert HOLD_S * 0.9e9 <= events[0].duration_ns <= HOLD_S * 1.5e9
    assert events[0].attrs["waker_pid"] == os.getpid()  # SIGCONT wakes it in the sender's context
    assert not _ongoing(end, proc.pid)
    wire = json.loads(json.dumps(snapshot_codec.encode("sched", mid.snapshot)))
    assert snapshot_codec.decode("sched", wire).ongoing == mid.snapshot.ongoing  # as the TUI gets it
    registry = CollectorRegistry()
    registry.register(SchedCollector(SnapshotStore(mid.snapshot)))
    stuck = registry.get_sample_value("gpusleuth_thread_stuck_seconds", {"pid": str(proc.pid), "tid": str(proc.pid),
                                                                         "comm": ongoing[0].comm, "state": "T"})
    assert HOLD_S * 2 / 3 * 0.9 <= stuck <= HOLD_S


@pytest.mark.skipif(v1_mount("freezer") is None, reason="no cgroup v1 freezer on this host")
def test_v1_freeze_of_a_running_thread_is_frozen_from_the_kernel(kernel_only_probe):
    probe = kernel_only_probe
    with scratch_cgroup(v1_mount("freezer")) as cg, child(BUSY, cg) as proc:
        watch(probe, proc.pid)
        state = cg / "freezer.state"
        mid, end, _ = _hold(probe, proc.pid, lambda: state.write_text("FROZEN"), lambda: state.write_text("THAWED"))
    assert [o.state for o in _ongoing(mid, proc.pid)] == ["frozen"], mid.snapshot.ongoing
    events = _offcpu(mid, proc.pid) + _offcpu(end, proc.pid)
    assert [e.attrs["state"] for e in events] == ["frozen"]  # the plain tracepoint said D; the raw one 0x8000
    assert HOLD_S * 0.9e9 <= events[0].duration_ns <= HOLD_S * 1.5e9


@pytest.mark.skipif(v1_mount("freezer") is None, reason="no cgroup v1 freezer on this host")
def test_v1_freeze_of_a_sleeping_thread_is_frozen(probe):
    # Frozen while asleep it never switches (the kernel froze it in place: the cgroup says so); caught on the CPU
    # it switches out frozen (the raw tracepoint says so). Either way it is frozen.
    with scratch_cgroup(v1_mount("freezer")) as cg, child(SLEEPY, cg) as proc:
        watch(probe, proc.pid)
        probe.set_hot_threads([proc.pid])  # its sleeps are events: the frozen one among them
        state = cg / "freezer.state"
        try:
            mid, end, _ = _hold(probe, proc.pid, lambda: state.write_text("FROZEN"),
                                lambda: state.write_text("THAWED"))
        finally:
            probe.set_hot_threads([])
    assert mid.snapshot.frozen_pids == [proc.pid]
    assert [o.state for o in _ongoing(mid, proc.pid)] == ["frozen"]
    events = _offcpu(mid, proc.pid) + _offcpu(end, proc.pid)
    assert [e.attrs["state"] for e in events] == ["frozen"]


@pytest.mark.skipif(v2_mount() is None or not (v2_mount() / "cgroup.subtree_control").exists(),
                    reason="no cgroup v2 hierarchy on this host")
def test_v2_freeze_is_frozen(probe):
    with scratch_cgroup(v2_mount()) as cg, child(SLEEPY, cg) as proc:
        watch(probe, proc.pid)
        probe.set_hot_threads([proc.pid])
        freeze = cg / "cgroup.freeze"
        try:
            mid, end, _ = _hold(probe, proc.pid, lambda: freeze.write_text("1"), lambda: freeze.write_text("0"))
        finally:
            probe.set_hot_threads([])
    assert [o.state for o in _ongoing(mid, proc.pid)] == ["frozen"], mid.snapshot.ongoing
    events = _offcpu(mid, proc.pid) + _offcpu(end, proc.pid)
    # the scheduler saw S (a TASK_FREEZABLE sleep, as a plain nanosleep): only the cgroup tells
    assert [(e.attrs["state"], e.attrs["frozen_seen_by"]) for e in events] == [("frozen", "cgroup")]


FSYNC = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
while True:
    os.pwrite(fd, os.urandom(65536), 0)
    os.fsync(fd)
"""


def test_fsync_waits_are_D(tmp_path):
    probe = SchedProbe(SchedConfig(slow_offcpu_ms=0.05, has_cgroups=False))
    probe.start()
    try:
        with child(FSYNC.replace("sys.argv[1]", repr(str(tmp_path / "f")))) as proc:
            watch(probe, proc.pid)
            time.sleep(0.5)
            result = probe.poll(monotonic_ns())
    finally:
        probe.stop()
    states = [e.attrs["state"] for e in result.events if e.kind == "offcpu" and e.pid == proc.pid]
    print(f"FIGURE fsync loop: {states.count('D')} D waits >= 50 us in 0.5 s")
    assert states.count("D") >= 5 and set(states) == {"D"}


def test_a_hot_threads_sleeps_are_events_and_only_its(probe):
    code = "import sys, time\nsys.stdin.readline()\nfor _ in range(50):\n    time.sleep(0.003)\nsys.stdin.readline()\n"
    with child(SLEEPY) as other, child(code) as hot:
        time.sleep(0.2)
        probe.update_watch(WatchSet(tgids=frozenset({hot.pid, other.pid})))
        probe.set_hot_threads([hot.pid])
        try:
            probe.poll(monotonic_ns())
            hot.stdin.write("go\n")
            hot.stdin.flush()
            time.sleep(0.6)
            result = probe.poll(monotonic_ns())
        finally:
            probe.set_hot_threads([])
    sleeps = [e for e in result.events if e.kind == "offcpu" and e.tid == hot.pid and e.attrs["state"] == "S"]
    print(f"FIGURE hot thread: {len(sleeps)} offcpu S events for 50 sleeps of 3 ms")
    assert 45 <= len(sleeps) <= 51 and all(e.attrs["is_hot"] and e.duration_ns >= 2.5e6 for e in sleeps)
    assert result.snapshot.threads[hot.pid].is_hot
    assert not [e for e in result.events if e.kind == "offcpu" and e.pid == other.pid]  # S of a non-hot thread
