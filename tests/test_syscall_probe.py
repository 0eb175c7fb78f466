"""The syscall probe against workloads with known syscall behaviour (real eBPF, root)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import warnings

import pytest

from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.records import monotonic_ns
from gpusleuth.probes.kernel.syscall_table import syscall_number
from gpusleuth.probes.kernel.syscalls import SyscallConfig, SyscallProbe
from tests.agent_helpers import spawn_python

pytestmark = pytest.mark.root

# The child waits for "go", runs the raw nanosleep syscall (not glibc's clock_nanosleep) N times, and prints its
# own measurement of each call on CLOCK_MONOTONIC. It runs SCHED_FIFO so that on a busy 2-core box its wakeups are
# not delayed past the bucket: the workload's behaviour must be known for the bucket count to mean anything.
NANOSLEEP_CHILD = """
import ctypes, json, os, sys, time
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
libc = ctypes.CDLL(None, use_errno=True)
class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
ts = timespec(0, 5_000_000)
sys.stdin.readline()
spans = []
for _ in range(200):
    t0 = time.monotonic_ns()
    libc.syscall(NR, ctypes.byref(ts), None)
    spans.append((t0, time.monotonic_ns()))
print(json.dumps(spans), flush=True)
sys.stdin.readline()
"""


def _start_probe(pid: int, **cfg) -> SyscallProbe:
    probe = SyscallProbe(SyscallConfig(**cfg))
    probe.update_watch(WatchSet(tgids=frozenset({pid})))
    probe.start()
    probe.poll(monotonic_ns())  # discard anything before the workload
    return probe


def test_nanosleep_histogram_and_slow_events():
    nr = syscall_number("nanosleep")
    assert nr is not None, "the syscall table has no nanosleep"
    child = spawn_python(NANOSLEEP_CHILD.replace("NR", str(nr)))
    probe = _start_probe(child.pid, slow_threshold_ms=4.0)
    try:
        child.stdin.write("go\n")
        child.stdin.flush()
        spans = json.loads(child.stdout.readline())
        result = probe.poll(monotonic_ns())
    finally:
        probe.stop()
        child.communicate("done\n", timeout=10)

    hist = result.snapshot.processes[child.pid].syscalls["nanosleep"]
    # slot 23 holds [2^22, 2^23) ns = [4.19, 8.39) ms: the 4-8 ms bucket
    assert hist.buckets.get(23, 0) >= 195, hist
    assert hist.count == 200

    slow = sorted((e for e in result.events if e.pid == child.pid and e.attrs["syscall"] == "nanosleep"),
                  key=lambda e: e.start_ns)
    assert len(slow) == 200
    worst = max(abs(e.duration_ns - (t1 - t0)) for e, (t0, t1) in zip(slow, spans))
    print(f"FIGURE nanosleep: 4-8 ms bucket {hist.buckets.get(23, 0)}/200, slow events {len(slow)}, "
          f"worst duration error {worst / 1e3:.1f} us")
    for event, (t0, t1) in zip(slow, spans):
        assert abs(event.duration_ns - (t1 - t0)) <= 1_000_000, (event, t1 - t0)
        assert t0 <= event.start_ns <= t1
        assert event.tid == child.pid
        assert event.comm.startswith("python"), event.comm



GETPPID_CHILD = """
import os, sys
sys.stdin.readline()
for _ in range(10_000):
    os.getppid()
print("done", flush=True)
sys.stdin.readline()
"""


def test_getppid_count_matches_syscount():
    child = spawn_python(GETPPID_CHILD)
    probe = _start_probe(child.pid)
    syscount = subprocess.Popen(["syscount-bpfcc", "-p", str(child.pid), "-d", "20"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        banner = syscount.stdout.readline()  # printed once syscount's programs are attached
        assert "Tracing" in banner, banner
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        ours = probe.poll(monotonic_ns()).snapshot.processes[child.pid].syscalls["getppid"].count
        child.stdin.write("exit\n")
        child.stdin.flush()
        child.wait(timeout=10)
        syscount.send_signal(2)  # SIGINT: syscount prints its table and exits
        out, _ = syscount.communicate(timeout=30)
    finally:
        probe.stop()
        if syscount.poll() is None:
            syscount.kill()
    match = re.search(r"^getppid\s+(\d+)\s*$", out, re.M)
    assert match, out
    theirs = int(match.group(1))
    print(f"FIGURE getppid: ours {ours}, syscount-bpfcc {theirs}")
    assert theirs >= 10_000
    assert abs(ours - theirs) <= 0.01 * theirs, (ours, theirs)


def test_unwatched_process_is_not_counted():
    child = spawn_python(GETPPID_CHILD)
    probe = _start_probe(0)  # watch nothing that exists
    try:
        child.stdin.write("go\n")
        child.stdin.flush()
        child.stdout.readline()
        snap = probe.poll(monotonic_ns()).snapshot
    finally:
        probe.stop()
        child.communicate("exit\n", timeout=10)
    assert child.pid not in snap.processes


def test_status_names_the_path_taken():
    probe = SyscallProbe(SyscallConfig())
    probe.start()
    try:
        assert "raw_syscalls" in probe.status().path
        assert probe.status().state.value == "ok"
    finally:
        probe.stop()
    assert probe.status().state.value == "stopped"


def _cgroup2_root() -> str | None:
    for line in open("/proc/mounts"):
        dev, path, fstype = line.split()[:3]
        if fstype == "cgroup2":
            return path
    return None


@pytest.mark.skipif(_cgroup2_root() is None, reason="no cgroup v2 hierarchy mounted")
def test_cgroup_filter_watches_processes_in_the_cgroup(tmp_path):
    from gpusleuth.probes.kernel.proc_info import cgroup_id
    cg = os.path.join(_cgroup2_root(), f"gpusleuth-test-{os.getpid()}")
    os.mkdir(cg)
    inside = spawn_python(GETPPID_CHILD)
    outside = spawn_python(GETPPID_CHILD)
    try:
        with open(os.path.join(cg, "cgroup.procs"), "w") as fh:
            fh.write(str(inside.pid))
        probe = SyscallProbe(SyscallConfig())
        probe.update_watch(WatchSet(cgroup_ids=frozenset({cgroup_id(cg)})))
        probe.start()
        try:
            for child in (inside, outside):
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == "done"
            snap = probe.poll(monotonic_ns()).snapshot
        finally:
            probe.stop()
    finally:
        for child in (inside, outside):
            child.communicate("exit\n", timeout=10)
        os.rmdir(cg)
    assert snap.processes[inside.pid].syscalls["getppid"].count == 10_000
    assert outside.pid not in snap.processes


def test_snapshot_crosses_the_control_socket_unchanged():
    child = spawn_python(GETPPID_CHILD)
    probe = _start_probe(child.pid)
    try:
        child.stdin.write("go\n")
        child.stdin.flush()
        child.stdout.readline()
        snap = probe.poll(monotonic_ns()).snapshot
    finally:
        probe.stop()
        child.communicate("exit\n", timeout=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a value of another type than its field declares would warn here
        wire = json.loads(json.dumps(snapshot_codec.encode("syscalls", snap)))
    assert wire["processes"][str(child.pid)]["syscalls"]["getppid"]["count"] == 10_000  # JSON keys are strings
    back = snapshot_codec.decode("syscalls", wire)
    assert back == snap and back.processes[child.pid].syscalls["getppid"].count == 10_000
