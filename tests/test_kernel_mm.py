"""Memory stalls of watched threads, for real (root, eBPF): a memory-cgroup squeeze makes the thread reclaim
(direct_reclaim events, reclaim time per thread), and touching a known number of new pages gives that many faults
(per thread from exceptions:page_fault_user, per process from /proc as mm.faults{kind=minor|major})."""
from __future__ import annotations

import os
import time

import pytest

from gpusleuth.probes.kernel.sched import SchedConfig, SchedProbe
from gpusleuth.probes.records import monotonic_ns
from tests.kernel_helpers import child, scratch_cgroup, v1_mount, watch

pytestmark = pytest.mark.root
LIMIT = 32 << 20
FILE_MB = 96
PAGES = 4000

# Reads a file three times its cgroup's memory limit: its page cache is charged to the cgroup, which reclaims it.
READER = """
import os, sys
sys.stdin.readline()
for _ in range(2):
    fd = os.open(PATH, os.O_RDONLY)
    while os.read(fd, 1 << 20):
        pass
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
print("done", flush=True)
sys.stdin.readline()
"""
TOUCHER = f"""
import mmap, sys
sys.stdin.readline()
m = mmap.mmap(-1, {PAGES} * mmap.PAGESIZE)
for i in range(0, {PAGES} * mmap.PAGESIZE, mmap.PAGESIZE):
    m[i] = 1
print("done", flush=True)
sys.stdin.readline()
"""


def _run(probe, proc):
    """Watch the child, let it do its work, and poll once it says it is done."""
    watch(probe, proc.pid)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"
    return probe.poll(monotonic_ns())


@pytest.mark.skipif(v1_mount("memory") is None, reason="no cgroup v1 memory controller on this host")
def test_a_memcg_squeeze_is_reclaim_on_the_thread(tmp_path):
    path = tmp_path / "big"
    with open(path, "wb") as f:
        for _ in range(FILE_MB):
            f.write(os.urandom(1 << 20))
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # not in the page cache: the child's reads charge it
    os.close(fd)
    probe = SchedProbe(SchedConfig(min_reclaim_ms=0, has_cgroups=False))
    probe.start()
    try:
        with scratch_cgroup(v1_mount("memory"), {"memory.limit_in_bytes": str(LIMIT)}) as cg, \
                child(READER.replace("PATH", repr(str(path))), cg) as proc:
            result = _run(probe, proc)
    finally:
        probe.stop()
    reclaims = [e for e in result.events if e.kind == "direct_reclaim" and e.pid == proc.pid]
    pages = sum(e.attrs["nr_reclaimed"] for e in reclaims)
    spent = result.snapshot.threads[proc.pid].reclaim_ns
    print(f"FIGURE {2 * FILE_MB} MB read through a {LIMIT >> 20} MB memcg: {len(reclaims)} reclaims, {pages} pages, "
          f"{spent / 1e6:.1f} ms")
    assert len(reclaims) >= 5 and {e.attrs["scope"] for e in reclaims} == {"memcg"}
    assert pages * 4096 >= LIMIT / 2  # of the 160 MB that did not fit (the kernel frees some by other paths)
    assert spent >= sum(e.duration_ns for e in reclaims) > 0


def test_touching_new_pages_is_that_many_faults():
    probe = SchedProbe(SchedConfig(has_cgroups=False))
    probe.start()
    try:
        with child(TOUCHER) as proc:
            result = _run(probe, proc)
    finally:
        probe.stop()
    faults = {s.labels["kind"]: s.value for s in result.samples if s.series == "mm.faults"
              and s.labels["pid"] == str(proc.pid)}
    thread = result.snapshot.threads[proc.pid].faults
    print(f"FIGURE {PAGES} pages touched: {thread} user faults on the thread, /proc minor {faults['minor']:.0f}, "
          f"major {faults['major']:.0f}")
    assert PAGES <= thread <= PAGES * 1.5
    assert PAGES <= faults["minor"] <= PAGES * 2 and faults["major"] <= 10
