"""Softirq load per CPU, for real (root, eBPF): a UDP flood over loopback from a sender pinned to one CPU makes that
CPU spend a large share of its time in NET_RX, which the probe reports as softirq events on that CPU."""
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

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.cpu_count() < 2 or shutil.which("gcc") is None
                                 or shutil.which("chrt") is None,
                                 reason="needs two CPUs, gcc (the flood is benchmarks/udp_flood.c) and chrt")]
FLOOD_C = Path(__file__).parent.parent / "benchmarks" / "udp_flood.c"
CPU = 1
SECONDS = 1.5


def test_a_udp_flood_is_softirq_load_on_its_cpu(tmp_path):
    exe = tmp_path / "udp_flood"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(FLOOD_C)], check=True)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    probe = SchedProbe(SchedConfig(has_cgroups=False))
    probe.start()
    try:
        probe.poll(monotonic_ns())
        t0 = monotonic_ns()
        # SCHED_FIFO: the flood keeps its CPU however busy the box is (autogroups would give it a share only)
        sent = subprocess.run(["chrt", "-f", "1", "taskset", "-c", str(CPU), str(exe), str(rx.getsockname()[1]),
                               str(SECONDS)], check=True, capture_output=True, text=True).stdout
        t1 = monotonic_ns()
        time.sleep(0.3)  # a run of hot windows closes at the CPU's next interrupt
        result = probe.poll(monotonic_ns())
    finally:
        probe.stop()
        rx.close()
    runs = [e for e in result.events if e.kind == "softirq" and e.attrs["cpu"] == CPU and e.overlaps(t0, t1)]
    busy = sum(e.attrs["ns"] for e in runs)
    print(f"FIGURE UDP flood ({float(sent):.0f} datagrams/s) on CPU {CPU}: {len(runs)} softirq runs, "
          f"{busy / 1e6:.0f} ms of irq time in {sum(e.duration_ns for e in runs) / 1e6:.0f} ms, "
          f"vectors {sorted({e.attrs['vector'] for e in runs})}")
    assert runs, [e for e in result.events if e.kind == "softirq"]
    assert {e.attrs["vector"] for e in runs} == {"NET_RX"}
    assert all(e.attrs["share"] >= 0.2 and e.attrs["vector_ns"] <= e.attrs["ns"] <= e.duration_ns for e in runs)
    assert sum(e.duration_ns for e in runs) >= SECONDS * 0.5e9  # hot for most of the flood
