"""MIG: instances enumerated and labelled, per-instance memory and GPM, and no device-wide utilisation."""
from __future__ import annotations

import time

from fake_nvml import FakeMig, FakeNvml

from gpusleuth.probes.gpu.probe import GpuConfig, GpuProbe
from gpusleuth.probes.gpu.mig import profile_from_name
from gpusleuth.probes.gpu.snapshot import GpmMetrics

MIB = 1 << 20


def mig_fake() -> FakeNvml:
    fake = FakeNvml(2)
    g = fake.gpus[0]
    g.mig_mode = 1
    g.util_gpu = 99  # what a careless sampler would report: NVML answers NOT_SUPPORTED for it under MIG
    g.migs = [FakeMig(gi_id=1, profile="3g.40gb", mem_total=40 << 30, mem_used=9000 * MIB, gpm={2: 75.0, 3: 30.0}),
              FakeMig(gi_id=2, profile="1g.10gb", mem_used=100 * MIB, gpm={2: 5.0})]
    g.processes = [{"pid": 501, "used": 8 << 30, "gi": 1, "ci": 0}]
    g.samples = {1: [(time.time_ns() // 1000, 99)]}
    return fake


def test_profile_from_mig_device_name():
    assert profile_from_name("NVIDIA H100 80GB HBM3 MIG 1g.10gb") == "1g.10gb"
    assert profile_from_name("NVIDIA H100 80GB HBM3") == ""


def test_mig_instances_enumerated_with_memory_and_gpm():
    fake = mig_fake()
    probe = GpuProbe(GpuConfig(is_xid_enabled=False, is_kmsg_enabled=False), nvml=fake)
    probe.start()
    result = probe.poll(time.monotonic_ns())
    gpu0, gpu1 = result.snapshot.gpus
    assert gpu0.is_mig and not gpu1.is_mig
    inst = {i.gi_id: i for i in gpu0.mig_instances}
    assert (inst[1].profile, inst[1].fb_used_mib, inst[1].fb_total_mib) == ("3g.40gb", 9000, 40 * 1024)
    assert inst[1].uuid == "MIG-0-1-0" and inst[2].profile == "1g.10gb"
    assert inst[1].gpm.sm_active == 0.75 and inst[2].gpm.sm_active == 0.05
    assert fake.calls["nvmlGpmMigSampleGet"] >= 4  # per instance, not the whole GPU
    # never a wrong number: no device-wide utilisation or NVML util samples under MIG
    assert gpu0.util_gpu_pct is None and gpu0.gpm == GpmMetrics()
    assert not [s for s in result.samples if s.series.startswith("gpu.util") and s.labels["gpu"] == "0"]
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 1  # only GPU 1 was asked
    proc = gpu0.processes[0]
    assert (proc.pid, proc.gi_id, proc.ci_id, proc.sm_util_pct) == (501, 1, 0, None)
    assert "MIG on GPU 0" in probe.status().path
    probe.stop()


def test_mig_reconfiguration_is_picked_up_on_the_detail_interval():
    fake = mig_fake()
    probe = GpuProbe(GpuConfig(is_xid_enabled=False, interval_s=0.01, detail_interval_s=0.01), nvml=fake)
    probe.start()
    probe.poll(time.monotonic_ns())
    fake.gpus[0].migs.pop()  # gi 2 destroyed by an operator
    time.sleep(0.02)
    probe.poll(time.monotonic_ns())
    snap = probe.poll(time.monotonic_ns()).snapshot
    assert [i.gi_id for i in snap.gpus[0].mig_instances] == [1]
    probe.stop()
