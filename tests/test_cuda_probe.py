"""The cuda probe's real uprobes (root, eBPF) against a hardware-boundary fake: shared libraries built here with gcc
(probes/cuda/fake_cuda.c) that export libcuda's, libcudart's and libnccl's real names, signatures and symbol forms
but do no GPU work, loaded by a child process that makes exactly the calls each test asks for. CI has no GPU, so
this fake stands in for the driver; the probe, its BPF programs, symbol resolution and attach/detach are the real
ones. Counts, bytes and directions are compared exactly with the calls made."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.cuda import fakelib
from gpusleuth.probes.cuda.config import CudaConfig
from gpusleuth.probes.cuda.probe import CudaProbe
from gpusleuth.probes.records import monotonic_ns

pytestmark = pytest.mark.root
MIB = 1 << 20


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return fakelib.build(tmp_path_factory.mktemp("fakecuda"))


@pytest.fixture(scope="module")
def probe():
    p = CudaProbe(CudaConfig(rescan_interval_s=0.1, straggler_min_ms=0.0))
    p.start()
    assert "uprobe_multi" in p.status().path, "this kernel (6.18) has uprobe_multi links: the default path"
    yield p
    p.stop()


@pytest.fixture
def fake(fake_dir, probe):
    """One fake CUDA process, watched (its uprobes attached by the first poll), closed after the test."""
    with fakelib.FakeCudaProcess(fake_dir) as f:
        probe.update_watch(WatchSet(tgids=frozenset({f.pid})))
        probe.poll(monotonic_ns())
        yield f
    probe.update_watch(WatchSet())
    probe.poll(monotonic_ns())


def _proc(probe, pid):
    result = probe.poll(monotonic_ns())
    return result.snapshot.processes[pid], result


def test_libraries_and_versioned_symbols_are_reported(probe, fake, fake_dir):
    proc, result = _proc(probe, fake.pid)
    assert proc.libraries["driver"].path == str(fake_dir / "libcuda.so.1")
    assert proc.libraries["runtime"].path == str(fake_dir / "libcudart.so.13")
    assert proc.api == "driver+runtime"
    driver = proc.libraries["driver"].symbols
    for name in ("cuLaunchKernel", "cuLaunchKernel_ptsz", "cuLaunchKernelEx_ptsz", "cuMemAlloc_v2",
                 "cuMemcpyHtoD_v2_ptds", "cuStreamSynchronize_ptsz", "cuGraphLaunch"):
        assert name in driver, name
    assert "cuLaunchCooperativeKernel" in proc.libraries["driver"].missing  # the fake does not export it
    nccl = proc.libraries["nccl"].symbols
    assert nccl.count("ncclAllReduce") == 1 and "pncclAllReduce" not in nccl  # one uprobe for the alias pair
    assert result.snapshot.uprobes == sum(lib.uprobes for lib in proc.libraries.values()) > 50


def test_launch_counts_are_exact_on_every_thread(probe, fake):
    fake.loop("app_launch_loop", 1000, 3)  # three threads at once
    fake.loop("app_launch_ex_loop", 500)
    fake.call("cuLaunchKernel_ptsz", 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, times=7)  # this thread, still alive
    fake.call("cuGraphLaunch", 0, 0, times=4)
    proc, _ = _proc(probe, fake.pid)
    assert proc.launches == 3000 + 500 + 7
    assert proc.graph_launches == 4
    assert proc.threads[fake.pid].launches == 7  # live threads are listed; the exited workers are in the total


def test_sync_waits_match_the_processs_own_timing(probe, fake):
    fake.call("fake_set_wait_ns", 3_000_000)
    timed = [fake.call("cuStreamSynchronize", 0, times=3), fake.call("cudaDeviceSynchronize", times=2),
             fake.call("cudaEventSynchronize", 0, times=1)]
    proc, result = _proc(probe, fake.pid)
    # the runtime calls wrap driver calls (cudaDeviceSynchronize -> cuCtxSynchronize): each counts once
    assert {k: s.count for k, s in proc.syncs.items()} == {"stream": 3, "device": 2, "event": 1}
    own_ns = sum(sum(t["each_ns"]) for t in timed)  # the process's own timing of each call
    probe_ns = sum(s.duration.sum_ns for s in proc.syncs.values())
    assert abs(probe_ns - own_ns) / own_ns < 0.05, (probe_ns, own_ns)
    syncs = [e for e in result.events if e.kind == "cuda.sync"]
    assert len(syncs) == 6 and all(e.attrs["wait_ns"] >= 3_000_000 for e in syncs)


def test_each_host_step_counts_its_launches(probe, fake):
    fake.call("fake_set_wait_ns", 2_000_000)
    fake.loop("app_steps", 6, 1, 40)  # 6 steps of 40 launches then a stream sync, on a new thread
    proc, result = _proc(probe, fake.pid)
    steps = [e for e in result.events if e.kind == "cuda.sync"]
    assert [e.attrs["launches"] for e in steps] == [40] * 6
    closed = [e for e in steps if "host_ns" in e.attrs]  # the thread's first sync has no step before it
    assert len(closed) == 5
    for e in closed:
        assert 0 <= e.attrs["idle_gap_ns"] <= e.attrs["host_ns"]
        assert e.attrs["bound"] == ("gpu" if e.attrs["wait_ns"] >= 0.3 * e.attrs["host_ns"] else "cpu")
    assert proc.host_steps["cpu"] + proc.host_steps["gpu"] == 5
    fake.call("fake_set_wait_ns", 0)
    fake.loop("app_steps", 4, 1, 200)
    proc, result = _proc(probe, fake.pid)
    assert sum(e.attrs.get("bound") == "cpu" for e in result.events if e.kind == "cuda.sync") == 3


def test_copy_bytes_and_directions_are_exact(probe, fake):
    fake.call("cuMemcpyHtoD_v2", ["buf", 4096], ["buf", 4096], 4096, times=3)
    fake.call("cudaMemcpy", ["buf", 100], ["buf", 100], 100, 2, times=2)  # D2H, wrapping cuMemcpyDtoH_v2
    fake.call("cudaMemcpyAsync", ["buf", 64], ["buf", 64], 64, 1, 0, times=5)  # H2D, wrapping cuMemcpyAsync
    fake.call("cuMemcpyAsync_ptsz", ["buf", 1000], ["buf", 1000], 1000, 0, times=4)
    fake.call("cuMemcpyPeer", 0, 0, 0, 0, 777, times=2)  # bytes are the 5th argument
    proc, _ = _proc(probe, fake.pid)
    got = {d: (s.count, s.bytes) for d, s in proc.copies.items()}
    assert got == {"h2d": (8, 3 * 4096 + 5 * 64), "d2h": (2, 200), "default": (4, 4000), "peer": (2, 1554)}
    # bandwidth from the synchronous copies only (no stream argument): H2D 3 x 4096, D2H 2 x 100, peer 2 x 777
    assert set(proc.copy_bandwidth) == {"h2d", "d2h", "peer"}
    h2d_ns = proc.copies["h2d"].duration.sum_ns  # async calls included in the histogram, not in the bandwidth
    assert proc.copy_bandwidth["h2d"] > 3 * 4096 * 1e9 / h2d_ns


def test_allocations_frees_and_failures(probe, fake):
    fake.call("fake_set_alloc_limit", 64 * MIB)
    ptrs = fake.call("cudaMalloc", ["out"], MIB, times=3)["outs"]  # wraps cuMemAlloc_v2
    ptrs += fake.call("cuMemAllocAsync", ["out"], 2 * MIB, 0)["outs"]  # a tail call into cuMemAlloc_v2
    handle = fake.call("cuMemCreate", ["out"], 3 * MIB, 0, 0)["outs"]
    failed = fake.call("cuMemAlloc_v2", ["out"], 1 << 30)
    for p in ptrs[:2]:
        fake.call("cudaFree", p)
    fake.call("cuMemRelease", handle[0])
    proc, result = _proc(probe, fake.pid)
    assert failed["results"] == [2]
    assert (proc.allocs.count, proc.allocs.bytes, proc.allocs.failures) == (6, 8 * MIB, 1)
    assert (proc.frees.count, proc.frees.bytes) == (3, 5 * MIB)
    assert proc.live_alloc_bytes == 3 * MIB
    (fail,) = [e for e in result.events if e.kind == "cuda.alloc_failure"]
    assert fail.attrs == {"fn": "cuMemAlloc_v2", "bytes": 1 << 30, "error": 2}


def test_nccl_calls_bytes_and_communicator(probe, fake):
    comm = fake.call("ncclCommInitRank", ["out"], 2, ["id"], 1)["outs"][0]
    fake.call("ncclAllReduce", 0, 0, 1024, 7, 0, comm, 0, times=5)  # 1024 float32
    fake.call("pncclAllReduce", 0, 0, 1024, 7, 0, comm, 0)  # the alias: the same function
    fake.call("ncclReduce", 0, 0, 8, 8, 0, 0, comm, 0, times=2)  # comm is the 7th argument: on the stack
    fake.call("ncclSend", 0, 10, 9, 0, comm, 0)  # 10 bfloat16 to rank 0
    fake.call("ncclGroupStart", times=3)
    fake.call("ncclGroupEnd", times=3)
    proc, result = _proc(probe, fake.pid)
    (init,) = [e for e in result.events if e.kind == "nccl.comm_init"]
    assert (init.attrs["rank"], init.attrs["nranks"], init.attrs["unique_id"]) == (1, 2, bytes(range(16)).hex())
    got = {c.op: (c.stats.count, c.stats.bytes, c.rank) for c in proc.collectives}
    assert got == {"all_reduce": (6, 6 * 4096, 1), "reduce": (2, 128, 1), "send": (1, 20, 1)}
    assert proc.groups.count == 6


def test_straggler_is_the_rank_that_enters_last(probe, fake_dir):
    with fakelib.FakeCudaProcess(fake_dir) as a, fakelib.FakeCudaProcess(fake_dir) as b:
        probe.update_watch(WatchSet(tgids=frozenset({a.pid, b.pid})))
        probe.poll(monotonic_ns())
        comms = [f.call("ncclCommInitRankConfig", ["out"], 2, ["id", 100], rank, 0)["outs"][0]
                 for rank, f in ((0, a), (1, b))]
        for _ in range(10):
            a.call("ncclAllReduce", 0, 0, 256, 7, 0, comms[0], 0)
            time.sleep(0.005)  # rank 1 enters every collective about 5 ms after rank 0
            b.call("ncclAllReduce", 0, 0, 256, 7, 0, comms[1], 0)
        result = probe.poll(monotonic_ns())
    probe.update_watch(WatchSet())
    stragglers = [e for e in result.events if e.kind == "tp.straggler"]
    assert len(stragglers) == 10
    assert all(e.attrs["rank"] == 1 and e.pid == b.pid and e.attrs["spread_ms"] >= 5 for e in stragglers)
    (group,) = [g for k, g in result.snapshot.groups.items() if k == f"nccl:{bytes(range(100, 116)).hex()}"]
    assert (group.matched, group.ranks[1].last, group.ranks[0].last) == (10, 10, 0)
    assert group.ranks[1].caused_wait_ns == group.ranks[0].waited_ns >= 10 * 5e6


def test_unwatched_processes_are_not_counted(probe, fake, fake_dir):
    with fakelib.FakeCudaProcess(fake_dir) as other:
        other.loop("app_launch_loop", 500)
        fake.loop("app_launch_loop", 11)
        result = probe.poll(monotonic_ns())
    assert other.pid not in result.snapshot.processes
    assert result.snapshot.processes[fake.pid].launches == 11


def test_uprobes_detach_when_unwatched_and_when_the_process_exits(probe, fake_dir):
    with fakelib.FakeCudaProcess(fake_dir) as f:
        probe.update_watch(WatchSet(tgids=frozenset({f.pid})))
        assert probe.poll(monotonic_ns()).snapshot.uprobes > 50
        probe.update_watch(WatchSet())
        assert probe.poll(monotonic_ns()).snapshot.uprobes == 0
        f.loop("app_launch_loop", 100)  # not counted: detached
        probe.update_watch(WatchSet(tgids=frozenset({f.pid})))
        probe.poll(monotonic_ns())
        f.loop("app_launch_loop", 5)
        assert probe.poll(monotonic_ns()).snapshot.processes[f.pid].launches == 5
    assert probe.poll(monotonic_ns()).snapshot.uprobes == 0  # exited: detached
    assert _bpf_links() == 0  # no uprobe_multi link of ours is left open


def _bpf_links() -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if _readlink(fd) == "anon_inode:bpf_link")


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def test_per_launch_events_only_while_tracing(probe, fake):
    fake.loop("app_launch_loop", 30)
    assert not [e for e in probe.poll(monotonic_ns()).events if e.kind == "cuda.launch"]
    probe.trace_launches(30)
    fake.loop("app_launch_loop", 20)
    fake.loop("app_launch_ex_loop", 3)
    fake.call("cuGraphLaunch", 0, 0x99)
    probe.trace_launches(0)
    fake.loop("app_launch_loop", 10)
    launches = [e for e in probe.poll(monotonic_ns()).events if e.kind == "cuda.launch"]
    assert len(launches) == 24
    grid = [e for e in launches if e.attrs["fn"] == "cuLaunchKernel"]
    assert len(grid) == 20 and grid[0].attrs["grid"] == [4, 2, 1] and grid[0].attrs["block"] == [128, 1, 1]
    assert grid[0].attrs["function"] == hex(0x1000) and grid[0].attrs["stream"] == hex(0x77)
    ex = [e for e in launches if e.attrs["fn"] == "cuLaunchKernelEx"]
    assert ex[0].attrs["grid"] == [8, 4, 2] and ex[0].attrs["block"] == [256, 2, 1]
    assert ex[0].attrs["shared_mem"] == 1024 and ex[0].attrs["stream"] == hex(0x78)
    (graph,) = [e for e in launches if e.attrs["fn"] == "cuGraphLaunch"]
    assert graph.attrs["stream"] == hex(0x99)


def test_snapshot_crosses_the_control_socket_unchanged(probe, fake):
    fake.loop("app_steps", 3, 1, 5)
    _, result = _proc(probe, fake.pid)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wire = json.loads(json.dumps(snapshot_codec.encode("cuda", result.snapshot)))
    assert wire["processes"][str(fake.pid)]["launches"] == 15
    assert snapshot_codec.decode("cuda", wire) == result.snapshot


def test_perf_event_path_for_older_kernels(fake_dir):
    """The same counts through one perf event per uprobe (kernels without uprobe_multi links); NCCL only, since
    each perf event takes an RCU grace period (~0.1 s here) to detach."""
    p = CudaProbe(CudaConfig(uprobe_path="perf", libraries=["nccl"]))
    p.start()
    try:
        assert "perf event" in p.status().path
        with fakelib.FakeCudaProcess(fake_dir) as f:
            p.update_watch(WatchSet(tgids=frozenset({f.pid})))
            assert p.poll(monotonic_ns()).snapshot.uprobes == 22  # 11 functions, each with a return probe
            comm = f.call("ncclCommInitRank", ["out"], 2, ["id", 50], 0)["outs"][0]
            f.call("ncclAllReduce", 0, 0, 10, 2, 0, comm, 0, times=3)  # 10 int32
            f.call("ncclGroupStart", times=2)
            proc = p.poll(monotonic_ns()).snapshot.processes[f.pid]
            assert [(c.op, c.stats.count, c.stats.bytes, c.rank) for c in proc.collectives] == [
                ("all_reduce", 3, 120, 0)]
            assert proc.groups.count == 2
        assert p.poll(monotonic_ns()).snapshot.uprobes == 0
        assert not p._bpf.uprobe_fds  # every perf event closed
    finally:
        p.stop()


def test_driver_only_process_from_a_wheel_folder(probe, fake_dir, tmp_path):
    """No libcudart mapped (a runtime linked statically, its symbols hidden): the driver API still sees every
    launch. The library sits where pip's nvidia wheels put theirs."""
    lib_dir = tmp_path / "site-packages" / "nvidia" / "cu13" / "lib"
    lib_dir.mkdir(parents=True)
    shutil.copy(fake_dir / "libcuda.so.1", lib_dir / "libcuda.so.1")
    code = (f"import ctypes, sys; cu = ctypes.CDLL('{lib_dir}/libcuda.so.1'); print('ready', flush=True); "
            "sys.stdin.readline(); [cu.cuLaunchKernel(*([0] * 11)) for _ in range(9)]; print('done', flush=True); "
            "sys.stdin.readline()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        probe.update_watch(WatchSet(tgids=frozenset({child.pid})))
        probe.poll(monotonic_ns())
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        proc = probe.poll(monotonic_ns()).snapshot.processes[child.pid]
    finally:
        child.communicate("x\n", timeout=10)
        probe.update_watch(WatchSet())
        probe.poll(monotonic_ns())
    assert set(proc.libraries) == {"driver"} and proc.api == "driver only (runtime static or absent)"
    assert proc.libraries["driver"].path == str(lib_dir / "libcuda.so.1")
    assert proc.launches == 9
