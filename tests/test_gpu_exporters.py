"""dcgm-exporter compatible names, labels and units, and gpusleuth's own GPU series, through a fresh registry fed by
a Store filled from real polls of the probe (against the fake NVML)."""
from __future__ import annotations

import time

import pytest
from fake_nvml import FakeMig, FakeNvml

pytest.importorskip("prometheus_client", reason="prometheus-client not installed")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics  # noqa: E402
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families as parse_text  # noqa: E402

from gpusleuth.agent.store import Store  # noqa: E402
from gpusleuth.exporters.dcgm import DcgmCollector  # noqa: E402
from gpusleuth.exporters.gpu import GpuCollector  # noqa: E402
from gpusleuth.probes.gpu.probe import GpuConfig, GpuProbe  # noqa: E402

MIB = 1 << 20
# The metrics dcgm-exporter's etc/default-counters.csv enables (4.x), less the two we document as not exported.
DCGM_DEFAULTS = {
    "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES",
}
LABELS = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"}


def scrape_setup(fake: FakeNvml, polls: int = 1) -> tuple[CollectorRegistry, GpuProbe, Store]:
    probe = GpuProbe(GpuConfig(xid_wait_ms=20, is_kmsg_enabled=False), nvml=fake)
    probe.start()
    store = Store(8 << 20)
    for _ in range(polls):
        result = probe.poll(time.monotonic_ns())
        store.add(result.samples, result.events)
        store.set_snapshot("gpu", result.snapshot)
    registry = CollectorRegistry()
    registry.register(DcgmCollector(store))
    registry.register(GpuCollector(store))
    return registry, probe, store


def labels_of(fake: FakeNvml, i: int = 0) -> dict[str, str]:
    import socket
    g = fake.gpus[i]
    return {"gpu": str(i), "UUID": g.uuid, "pci_bus_id": g.bus_id, "device": f"nvidia{i}", "modelName": g.name,
            "Hostname": socket.gethostname(), "DCGM_FI_DRIVER_VERSION": fake.driver}


def test_dcgm_names_units_and_labels():
    fake = FakeNvml(2)
    g = fake.gpus[1]
    g.power_mw, g.energy_mj, g.sm_clock, g.mem_clock, g.temp_c, g.mem_temp_c = 512_750, 98_765_432, 1980, 2619, 58, 66
    g.mem_used, g.mem_reserved, g.util_gpu, g.util_mem, g.reasons = 40_000 * MIB + 5, 640 * MIB, 100, 37, 0x4
    g.pcie_replay, g.remap_cor, g.remap_unc, g.ecc_dbe_vol = 12, 3, 1, 2
    g.gpm = {1: 99.0, 2: 93.0, 3: 45.0, 5: 62.0, 10: 71.0}
    registry, probe, _ = scrape_setup(fake)
    lab = labels_of(fake, 1)
    v = lambda name: registry.get_sample_value(name, lab)  # noqa: E731
    assert v("DCGM_FI_DEV_POWER_USAGE") == pytest.approx(512.75)  # W, from mW
    assert v("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION") == 98_765_432  # mJ, as NVML counts it
    assert (v("DCGM_FI_DEV_SM_CLOCK"), v("DCGM_FI_DEV_MEM_CLOCK")) == (1980, 2619)  # MHz
    assert (v("DCGM_FI_DEV_GPU_TEMP"), v("DCGM_FI_DEV_MEMORY_TEMP")) == (58, 66)  # C
    assert v("DCGM_FI_DEV_FB_USED") == 40_000 and v("DCGM_FI_DEV_FB_RESERVED") == 640  # MiB
    assert v("DCGM_FI_DEV_FB_FREE") == (80 * 1024 * MIB - 40_000 * MIB - 5 - 640 * MIB) // MIB
    assert (v("DCGM_FI_DEV_GPU_UTIL"), v("DCGM_FI_DEV_MEM_COPY_UTIL")) == (100, 37)  # %
    assert v("DCGM_FI_PROF_SM_ACTIVE") == pytest.approx(0.93)  # ratio 0..1, not %
    assert v("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE") == pytest.approx(0.62)
    assert v("DCGM_FI_PROF_DRAM_ACTIVE") == pytest.approx(0.71)
    assert v("DCGM_FI_DEV_PCIE_REPLAY_COUNTER") == 12 and v("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL") == 2
    assert (v("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS"), v("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS")) == (3, 1)
    assert v("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS") == 4 and v("DCGM_FI_DEV_XID_ERRORS") == 0
    families = {m.name: m for m in registry.collect()}
    assert DCGM_DEFAULTS <= set(families), DCGM_DEFAULTS - set(families)
    for name in families:
        if name.startswith("DCGM_"):
            assert all(set(s.labels) == LABELS for s in families[name].samples), name
    probe.stop()


def test_missing_values_make_no_series():
    fake = FakeNvml(1)
    fake.gpus[0].unsupported_fields |= {82}  # no memory temperature on this board
    fake.gpus[0].unsupported.add("nvmlDeviceGetPowerUsage")
    registry, probe, _ = scrape_setup(fake)
    assert registry.get_sample_value("DCGM_FI_DEV_MEMORY_TEMP", labels_of(fake)) is None
    assert registry.get_sample_value("DCGM_FI_DEV_POWER_USAGE", labels_of(fake)) is None
    assert registry.get_sample_value("DCGM_FI_DEV_GPU_TEMP", labels_of(fake)) == 33
    probe.stop()


def test_exposition_is_valid_text_and_openmetrics():
    registry, probe, _ = scrape_setup(FakeNvml(2), polls=2)
    text = generate_latest(registry).decode()
    names = {f.name for f in parse_text(text)}
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" in names and "gpusleuth_gpu_xid_errors" in names
    assert 'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{' in text  # the exact dcgm sample name, no _total
    om = {f.name: f for f in parse_openmetrics(generate_openmetrics(registry).decode())}  # strict: raises if invalid
    assert om["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"].type == "unknown"
    assert om["DCGM_FI_DEV_GPU_UTIL"].type == "gauge"
    probe.stop()


def test_lost_gpu_keeps_only_last_xid_and_is_flagged():
    fake = FakeNvml(2)
    registry, probe, store = scrape_setup(fake)
    fake.inject_event(1, 0x8, 79)
    time.sleep(0.1)
    fake.gpus[1].is_lost = True
    store.set_snapshot("gpu", probe.poll(time.monotonic_ns()).snapshot)
    lab = labels_of(fake, 1)
    assert registry.get_sample_value("DCGM_FI_DEV_POWER_USAGE", lab) is None  # no stale value
    assert registry.get_sample_value("DCGM_FI_DEV_XID_ERRORS", lab) == 79
    ids = {"gpu": "1", "UUID": fake.gpus[1].uuid}
    assert registry.get_sample_value("gpusleuth_gpu_lost", {**ids, "pci_bus_id": fake.gpus[1].bus_id}) == 1
    assert registry.get_sample_value("gpusleuth_gpu_xid_errors_total",
                                     {**ids, "xid": "79", "name": "gpu_fallen_off_bus", "severity": "fatal"}) == 1
    assert registry.get_sample_value("DCGM_FI_DEV_POWER_USAGE", labels_of(fake, 0)) == 70.0
    probe.stop()


def test_event_waits_failed_by_a_lost_gpu_are_counted_and_exported():
    fake = FakeNvml(2)
    fake.is_wait_lost_aware = True
    registry, probe, store = scrape_setup(fake)
    assert registry.get_sample_value("gpusleuth_gpu_xid_lost_waits_total", {}) == 0
    fake.gpus[1].is_lost = True
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        snap = probe.poll(time.monotonic_ns()).snapshot
        if snap.xid.lost_waits >= 2:
            break
        time.sleep(0.02)
    store.set_snapshot("gpu", snap)
    assert snap.xid.lost_waits >= 2 and snap.xid.is_running  # backs off and keeps waiting for the other GPU
    assert registry.get_sample_value("gpusleuth_gpu_xid_lost_waits_total", {}) == snap.xid.lost_waits
    probe.stop()


def test_xid_counter_per_code_counts_every_occurrence():
    fake = FakeNvml(1)
    registry, probe, store = scrape_setup(fake)
    for code in (13, 31, 13, 13):
        fake.inject_event(0, 0x8, code)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        snap = probe.poll(time.monotonic_ns()).snapshot
        if sum(snap.gpus[0].xid_counts.values()) == 4:
            break
        time.sleep(0.02)
    store.set_snapshot("gpu", snap)
    ids = {"gpu": "0", "UUID": fake.gpus[0].uuid}
    get = lambda code, name, sev: registry.get_sample_value(  # noqa: E731
        "gpusleuth_gpu_xid_errors_total", {**ids, "xid": code, "name": name, "severity": sev})
    assert get("13", "graphics_engine_exception", "app") == 3
    assert get("31", "gpu_memory_page_fault", "app") == 1
    probe.stop()


def test_mig_series_carry_instance_labels():
    fake = FakeNvml(1)
    fake.gpus[0].mig_mode = 1
    fake.gpus[0].migs = [FakeMig(gi_id=3, profile="2g.20gb", mem_used=7000 * MIB, gpm={2: 81.0})]
    registry, probe, _ = scrape_setup(fake)
    mig = {**labels_of(fake), "GPU_I_PROFILE": "2g.20gb", "GPU_I_ID": "3"}
    assert registry.get_sample_value("DCGM_FI_DEV_FB_USED", mig) == 7000
    assert registry.get_sample_value("DCGM_FI_PROF_SM_ACTIVE", mig) == pytest.approx(0.81)
    assert registry.get_sample_value("DCGM_FI_DEV_GPU_UTIL", labels_of(fake)) is None
    assert registry.get_sample_value("DCGM_FI_PROF_SM_ACTIVE", labels_of(fake)) is None
    assert registry.get_sample_value("gpusleuth_gpu_mig_enabled", {"gpu": "0", "UUID": fake.gpus[0].uuid}) == 1
    probe.stop()


def test_own_series_processes_and_throttle_reasons(tmp_path):
    fake = FakeNvml(1)
    g = fake.gpus[0]
    g.reasons = 0x4 | 0x1
    g.processes = [{"pid": 31337, "used": 2 * 1024 * MIB + 12345}]
    g.proc_util = [(31337, time.time_ns() // 1000, 88, 12)]
    registry, probe, _ = scrape_setup(fake)
    ids = {"gpu": "0", "UUID": g.uuid}
    proc = {**ids, "pid": "31337", "comm": "proc31337"}
    assert registry.get_sample_value("gpusleuth_gpu_process_memory_used_bytes", {**proc, "type": "C"}) == \
        2 * 1024 * MIB + 12345
    assert registry.get_sample_value("gpusleuth_gpu_process_sm_utilization_ratio", proc) == pytest.approx(0.88)
    assert registry.get_sample_value("gpusleuth_gpu_clock_event_reason", {**ids, "reason": "sw_power_cap"}) == 1
    assert registry.get_sample_value("gpusleuth_gpu_clock_event_reason", {**ids, "reason": "hw_slowdown"}) == 0
    assert registry.get_sample_value("gpusleuth_gpu_throttled", ids) == 1
    assert registry.get_sample_value("gpusleuth_gpu_xid_thread_running", {}) == 1
    probe.stop()


def test_no_snapshot_no_series():
    registry = CollectorRegistry()
    registry.register(DcgmCollector(Store(8 << 20)))
    registry.register(GpuCollector(Store(8 << 20)))
    assert list(registry.collect()) == []
