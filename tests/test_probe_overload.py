"""A kernel probe under an event storm, then after it (real eBPF): losses make it degraded, and it returns to ok
once the storm has been over for the loss window; no poll discards an event it already read; events are delivered
with their lateness. Also the series budget with 2,000 real threads in one watched process."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from gpusleuth.exporters.base import ExportOptions
from gpusleuth.exporters.sched import SchedCollector
from gpusleuth.probes.base import ProbeState, WatchSet
from gpusleuth.probes.bpf import probe as bpf_probe
from gpusleuth.probes.kernel.sched import SchedConfig, SchedProbe
from gpusleuth.probes.kernel.syscalls import SyscallConfig, SyscallProbe
from gpusleuth.probes.records import monotonic_ns
from kernel_helpers import SnapshotStore

pytestmark = pytest.mark.root

# Every syscall of the storm is "slow" at threshold 0: far more events than the ring buffer holds per poll.
STORM = "import os, sys\nsys.stdin.readline()\nfor _ in range(3_000_000): os.getppid()\nprint('done', flush=True)\n" \
        "sys.stdin.readline()\n"


def test_degraded_during_a_storm_and_ok_after_it(monkeypatch):
    monkeypatch.setattr(bpf_probe, "LOSS_WINDOW_S", 2.0)
    child = subprocess.Popen([sys.executable, "-c", STORM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    probe = SyscallProbe(SyscallConfig(slow_threshold_ms=0, interval_s=0.5, max_events_per_poll=20_000))
    probe.update_watch(WatchSet(tgids=frozenset({child.pid})))
    try:
        probe.start()
        probe.poll(monotonic_ns())
        child.stdin.write("go\n")
        child.stdin.flush()
        states, delivered = [], 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            result = probe.poll(monotonic_ns())
            delivered += len(result.events)
            states.append(probe.status().state)
            if probe.status().state == ProbeState.DEGRADED:
                break
            time.sleep(0.5)
        assert ProbeState.DEGRADED in states, states
        assert "lost in the last 2 s" in probe.status().reason
        assert child.stdout.readline().strip() == "done"  # the storm is over
        back = None
        for _ in range(40):  # drain what waits, then the window passes with no new loss
            result = probe.poll(monotonic_ns())
            delivered += len(result.events)
            if probe.status().state == ProbeState.OK:
                back = probe.status()
                break
            time.sleep(0.25)
        assert back is not None, probe.status()
        assert back.details["events_delivered"] == delivered and delivered > 0
        assert back.details["lateness_s"] >= 0
        snap = result.snapshot
        counted = snap.processes[child.pid].syscalls["getppid"].count
        assert counted == 3_000_000  # histograms are exact whatever the event buffer lost
        assert delivered + snap.lost_events >= 3_000_000  # every getppid was delivered or counted lost
    finally:
        probe.stop()
        child.kill()
        child.wait()


THREADS = """
import sys, threading, time
stop = threading.Event()
def work(i):
    while not stop.wait(0.01 * (1 + i % 7)):
        pass
ts = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(2000)]
for t in ts: t.start()
print("up", flush=True)
sys.stdin.readline()
"""


def test_the_series_budget_holds_with_2000_threads():
    child = subprocess.Popen([sys.executable, "-c", THREADS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    probe = SchedProbe(SchedConfig(has_irq=False, has_reclaim=False))
    try:
        assert child.stdout.readline().strip() == "up"
        probe.update_watch(WatchSet(tgids=frozenset({child.pid})))
        probe.start()
        probe.poll(monotonic_ns())
        time.sleep(2)
        snap = probe.poll(monotonic_ns()).snapshot
    finally:
        probe.stop()
        child.kill()
        child.wait()
    assert len([t for t in snap.threads.values() if t.pid == child.pid]) >= 2000
    store = SnapshotStore(snap)

    def labelled(options: ExportOptions) -> tuple[int, int]:
        families = list(SchedCollector(store, options).collect())
        threads = sum(len(f.samples) for f in families if f.name.startswith("gpusleuth_thread_"))
        return sum(1 for f in families for s in f.samples if s.labels), threads

    total, threads = labelled(ExportOptions())  # defaults: the 16 threads that waited most
    assert threads == 16 * 5 and total <= 2000
    total, threads = labelled(ExportOptions(top_threads=50))
    assert threads == 50 * 5  # five per-thread families, the 50 threads that waited most
    options = ExportOptions(series_budget=120, top_threads=2000)
    total, threads = labelled(options)
    assert threads <= 120 and options.over_budget["sched"] >= 2000 * 5 - 120
    assert total <= 120 + 16 * 3  # beyond the budget only small fixed families (SMALL_FAMILY) are kept
