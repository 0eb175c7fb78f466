"""The cuda probe's Prometheus series, through a fresh registry fed by a Store holding a real poll of the probe
(root, eBPF) against the fake CUDA/NCCL libraries (probes/cuda/fake_cuda.c: a hardware-boundary fake, CI has no
GPU); promtool must accept the exposition."""
from __future__ import annotations

import shutil
import subprocess

import pytest

pytest.importorskip("prometheus_client", reason="prometheus-client not installed")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from gpusleuth.agent.store import Store  # noqa: E402
from gpusleuth.exporters.cuda import CudaCollector  # noqa: E402
from gpusleuth.probes.base import WatchSet  # noqa: E402
from gpusleuth.probes.cuda import fakelib  # noqa: E402
from gpusleuth.probes.cuda.config import CudaConfig  # noqa: E402
from gpusleuth.probes.cuda.probe import CudaProbe  # noqa: E402
from gpusleuth.probes.records import monotonic_ns  # noqa: E402

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """(registry, pid) after a known workload: 2 x 25 launches in host steps, 3 H2D copies, an allocation failure,
    NCCL all-reduces on one communicator."""
    probe = CudaProbe(CudaConfig(rescan_interval_s=0.1))
    probe.start()
    try:
        with fakelib.FakeCudaProcess(fakelib.build(tmp_path_factory.mktemp("fakecuda"))) as fake:
            probe.update_watch(WatchSet(tgids=frozenset({fake.pid})))
            probe.poll(monotonic_ns())
            fake.call("fake_set_wait_ns", 1_000_000)
            fake.loop("app_steps", 3, 1, 25)
            fake.call("cuMemcpyHtoD_v2", ["buf", 1000], ["buf", 1000], 1000, times=3)
            fake.call("fake_set_alloc_limit", 1 << 20)
            fake.call("cudaMalloc", ["out"], 4 << 20)
            comm = fake.call("ncclCommInitRank", ["out"], 2, ["id", 9], 1)["outs"][0]
            fake.call("ncclAllReduce", 0, 0, 100, 9, 0, comm, 0, times=4)  # 100 bfloat16
            result = probe.poll(monotonic_ns())
            pid = fake.pid
    finally:
        probe.stop()
    store = Store(8 << 20)
    store.set_snapshot("cuda", result.snapshot)
    registry = CollectorRegistry()
    registry.register(CudaCollector(store))
    return registry, pid


def test_launches_steps_and_syncs(scraped):
    registry, pid = scraped
    key = {"pid": str(pid), "comm": "python"}
    assert registry.get_sample_value("gpusleuth_cuda_kernel_launches_total", key) == 75
    assert registry.get_sample_value("gpusleuth_cuda_sync_wait_seconds_count", {**key, "call": "stream"}) == 3
    wait = registry.get_sample_value("gpusleuth_cuda_sync_wait_seconds_sum", {**key, "call": "stream"})
    assert 3e-3 <= wait < 3e-3 + 0.1
    steps = sum(registry.get_sample_value("gpusleuth_cuda_host_steps_total", {**key, "bound": b}) for b in
                ("cpu", "gpu"))
    assert steps == 2  # the thread's first sync closes no step
    assert registry.get_sample_value("gpusleuth_cuda_gpu_idle_gap_seconds_count", key) == 2


def test_copies_allocations_and_collectives(scraped):
    registry, pid = scraped
    key = {"pid": str(pid), "comm": "python"}
    assert registry.get_sample_value("gpusleuth_cuda_memcpy_bytes_total", {**key, "direction": "h2d"}) == 3000
    assert registry.get_sample_value("gpusleuth_cuda_allocation_failures_total", key) == 1
    assert registry.get_sample_value("gpusleuth_cuda_allocated_bytes_total", key) == 0
    group = "nccl:" + bytes(range(9, 25)).hex()
    coll = {**key, "library": "nccl", "group": group, "rank": "1", "op": "all_reduce"}
    assert registry.get_sample_value("gpusleuth_collective_calls_total", coll) == 4
    assert registry.get_sample_value("gpusleuth_collective_bytes_total", coll) == 800
    assert registry.get_sample_value("gpusleuth_cuda_library_attached", {**key, "library": "nccl"}) == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_exposition(scraped):
    registry, _ = scraped
    text = generate_latest(registry).decode()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
