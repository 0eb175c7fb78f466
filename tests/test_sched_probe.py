"""The scheduler probe against a waking thread with and without a CPU hog on its CPU (real eBPF, root)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.bpf.log2_hist import quantile_from_buckets
from gpusleuth.probes.records import monotonic_ns
from gpusleuth.probes.kernel.sched import SchedConfig, SchedProbe
from tests.agent_helpers import spawn_python

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.cpu_count() < 2, reason="needs two CPUs: one for the hog, one for the test")]

CPU = 1
# EEVDF lets a short sleeper preempt a same-weight hog at once, so the hog runs at nice -20 and the waker at
# nice 10: a weight skew that makes the waker genuinely wait behind the hog, as behind a heavy neighbour.
WAKER = f"""
import os, sys, time
os.nice(NICE)
os.sched_setaffinity(0, {{{CPU}}})
sys.stdin.readline()
for _ in range(100):
    time.sleep(0.001)
print("done", flush=True)
sys.stdin.readline()
"""
HOG = f"import os\nos.nice(-20)\nos.sched_setaffinity(0, {{{CPU}}})\nwhile True: pass\n"


def _runq_of_waker(probe: SchedProbe, with_hog: bool):
    # Without the hog the waker runs at nice -10, so incidental load on a shared box (other tests, a busy CI
    # neighbour) cannot masquerade as run-queue delay in the control.
    waker = spawn_python(WAKER.replace("NICE", "10" if with_hog else "-10"))
    hog = subprocess.Popen([sys.executable, "-c", HOG]) if with_hog else None
    try:
        probe.update_watch(WatchSet(tgids=frozenset({waker.pid})))
        probe.poll(monotonic_ns())
        waker.stdin.write("go\n")
        waker.stdin.flush()
        assert waker.stdout.readline().strip() == "done"
        result = probe.poll(monotonic_ns())
    finally:
        if hog:
            hog.kill()
            hog.wait()
        waker.communicate("exit\n", timeout=10)
    proc = result.snapshot.processes[waker.pid]
    return quantile_from_buckets(proc.runq.buckets, 0.5), proc.runq.count, result, waker.pid


@pytest.fixture(scope="module")
def probe():
    p = SchedProbe(SchedConfig(slow_runq_ms=1.0))
    p.start()
    yield p
    p.stop()


def test_unloaded_waker_runs_promptly(probe):
    p50_ns, count, _, _ = _runq_of_waker(probe, with_hog=False)
    print(f"FIGURE run-queue p50 without hog: {p50_ns / 1e6:.4f} ms over {count} wakeups")
    assert count >= 100
    assert p50_ns < 1e6, p50_ns


def test_hog_on_the_wakers_cpu_delays_it(probe):
    p50_ns, count, result, pid = _runq_of_waker(probe, with_hog=True)
    print(f"FIGURE run-queue p50 with hog: {p50_ns / 1e6:.2f} ms over {count} wakeups")
    assert count >= 100
    assert p50_ns > 1e6, p50_ns
    delays = [e for e in result.events if e.kind == "runq_delay" and e.pid == pid]
    assert len(delays) >= 50
    # the task that ran before the waker got the CPU is, for most delays, the hog
    assert sum(e.attrs["prev_comm"].startswith("python") for e in delays) >= len(delays) // 2
    threads = result.snapshot.threads
    assert threads[pid].runq_ns > 50e6


def test_off_cpu_time_per_thread(probe):
    _, _, result, pid = _runq_of_waker(probe, with_hog=False)
    off = result.snapshot.threads[pid].offcpu_ns
    assert off >= 100 * 1e6 * 0.9, off  # 100 sleeps of >= 1 ms


def test_snapshot_crosses_the_control_socket_unchanged(probe):
    _, count, result, pid = _runq_of_waker(probe, with_hog=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a value of another type than its field declares would warn here
        wire = json.loads(json.dumps(snapshot_codec.encode("sched", result.snapshot)))
    assert wire["processes"][str(pid)]["runq"]["count"] == count  # JSON keys are strings
    back = snapshot_codec.decode("sched", wire)
    assert back == result.snapshot and back.processes[pid].runq.count == count and back.threads[pid].pid == pid
