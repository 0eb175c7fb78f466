"""Softirq load per CPU, for real (root, eBPF): a UDP flood over loopback from a sender pinned to one CPU makes that
CPU spend a large share of its time in NET_RX, which the probe reports as softirq events on that CPU, while a watched
thread runs or waits there (the time is stolen from it), and not while none does."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from gpusleuth.probes.kernel.sched import SchedConfig, SchedProbe
from gpusleuth.probes.records import monotonic_ns
from tests.kernel_helpers import BUSY, child, watch

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.cpu_count() < 2 or shutil.which("gcc") is None
                                 or shutil.which("chrt") is None,
                                 reason="needs two CPUs, gcc (the flood is benchmarks/udp_flood.c) and chrt")]
FLOOD_C = Path(__file__).parent.parent / "benchmarks" / "udp_flood.c"
CPU = 1
SECONDS = 1.5
ON_CPU = f"import os\nos.sched_setaffinity(0, {{{CPU}}})\n" + BUSY  # the watched thread, on the flood's CPU


@pytest.fixture(scope="module")
def flood(tmp_path_factory):
    exe = tmp_path_factory.mktemp("flood") / "udp_flood"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(FLOOD_C)], check=True)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))

    def run(probe):
        """Flood for SECONDS; the softirq runs on CPU that overlap it, and the datagrams/s sent."""
        probe.poll(monotonic_ns())
        t0 = monotonic_ns()
        # SCHED_FIFO: the flood keeps its CPU however busy the box is (autogroups would give it a share only)
        sent = subprocess.run(["chrt", "-f", "1", "taskset", "-c", str(CPU), str(exe), str(rx.getsockname()[1]),
                               str(SECONDS)], check=True, capture_output=True, text=True).stdout
        t1 = monotonic_ns()
        time.sleep(0.3)  # a run of hot windows closes at the CPU's next interrupt
        events = probe.poll(monotonic_ns()).events
        return [e for e in events if e.kind == "softirq" and e.attrs["cpu"] == CPU and e.overlaps(t0, t1)], sent

    yield run
    rx.close()


@pytest.fixture(scope="module")
def probe():
    p = SchedProbe(SchedConfig(has_cgroups=False))
    p.start()
    yield p
    p.stop()


def test_a_udp_flood_is_softirq_load_on_the_watched_threads_cpu(probe, flood):
    with child(ON_CPU) as proc:
        watch(probe, proc.pid)
        runs, sent = flood(probe)
    busy = sum(e.attrs["ns"] for e in runs)
    print(f"FIGURE UDP flood ({float(sent):.0f} datagrams/s) on CPU {CPU}: {len(runs)} softirq runs, "
          f"{busy / 1e6:.0f} ms of irq time in {sum(e.duration_ns for e in runs) / 1e6:.0f} ms, "
          f"vectors {sorted({e.attrs['vector'] for e in runs})}")
    assert runs
    assert {e.attrs["vector"] for e in runs} == {"NET_RX"}
    assert all(e.attrs["share"] >= 0.2 and e.attrs["vector_ns"] <= e.attrs["ns"] <= e.duration_ns for e in runs)
    assert sum(e.duration_ns for e in runs) >= SECONDS * 0.5e9  # hot for most of the flood


def test_no_watched_thread_on_the_cpu_no_timing(probe, flood):
    with child(f"import os\nos.sched_setaffinity(0, {{{1 - CPU}}})\nimport time\ntime.sleep(60)\n") as proc:
        watch(probe, proc.pid)  # watched, but asleep on the other CPU
        runs, _ = flood(probe)
    assert not runs
