"""The GPU probe against the fake NVML: unit conversions, counters to rates, GPM, per-process data, NVML sample
buffers on the monotonic clock, faults (no GPU, no driver, old driver, GPU lost mid-run) and config validation."""
from __future__ import annotations

import os
import sys
import time

import pytest
from fake_nvml import FakeGpu, FakeNvml

from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.config import ConfigError
from gpusleuth.probes.base import ProbeState, ProbeUnavailable
from gpusleuth.probes.gpu.probe import GpuConfig, GpuProbe
from gpusleuth.probes.gpu.rates import CounterRate, counter_delta
from gpusleuth.probes.gpu.snapshot import GpmMetrics
from gpusleuth.probes.records import wall_offset_ns

MIB = 1 << 20


def started(fake: FakeNvml, tmp_path=None, **cfg) -> GpuProbe:
    cfg.setdefault("is_xid_enabled", False)
    cfg.setdefault("counters_interval_s", 0)  # most tests check every read on every poll
    cfg.setdefault("energy_interval_s", 0)
    cfg.setdefault("is_kmsg_enabled", False)
    probe = GpuProbe(GpuConfig(**cfg), nvml=fake, **({"proc_root": tmp_path} if tmp_path else {}))
    probe.start()
    return probe


def gpu_snap(result, index=0):
    return next(g for g in result.snapshot.gpus if g.index == index)


def test_units_on_intake_match_nvml_quirks():
    fake = FakeNvml(1)
    g = fake.gpus[0]
    g.power_mw, g.temp_c, g.mem_temp_c, g.sm_clock, g.mem_clock = 312_345, 61, 70, 1755, 2619
    g.mem_total, g.mem_used, g.mem_reserved = 80 * 1024 * MIB, 5000 * MIB + MIB - 1, 700 * MIB
    g.util_gpu, g.util_mem, g.pstate, g.reasons = 97, 41, 0, 0x4 | 0x40
    g.power_limit_mw = 350_000
    probe = started(fake)
    snap = gpu_snap(probe.poll(time.monotonic_ns()))
    assert snap.power_w == pytest.approx(312.345)
    assert snap.power_limit_w == pytest.approx(350.0)  # mW like power usage
    assert (snap.gpu_temp_c, snap.mem_temp_c, snap.sm_clock_mhz, snap.mem_clock_mhz) == (61, 70, 1755, 2619)
    assert snap.fb_used_mib == 5000  # floor to the MiB like nvidia-smi, reserved not counted as used
    assert snap.fb_reserved_mib == 700
    assert snap.fb_free_mib == (80 * 1024 * MIB - 5000 * MIB - MIB + 1 - 700 * MIB) // MIB
    assert (snap.util_gpu_pct, snap.util_mem_pct, snap.pstate) == (97, 41, 0)
    assert snap.clock_event_reason_names == ["sw_power_cap", "hw_thermal_slowdown"]
    assert snap.device == "nvidia0" and snap.pci_bus_id == "00000000:18:00.0"
    probe.stop()


def test_memory_v1_fallback_counts_reserved_as_used_and_reports_no_reserved():
    fake = FakeNvml(1, missing_symbols=("nvmlDeviceGetMemoryInfo_v2",))
    g = fake.gpus[0]
    g.mem_used, g.mem_reserved = 1000 * MIB, 300 * MIB
    probe = started(fake)
    snap = gpu_snap(probe.poll(time.monotonic_ns()))
    assert snap.fb_used_mib == 1300 and snap.fb_reserved_mib is None
    probe.poll(time.monotonic_ns())
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == 3  # v2 tried once, then v1 each poll
    probe.stop()


def test_counters_become_rates_using_field_timestamps():
    fake = FakeNvml(1)
    g = fake.gpus[0]
    g.unsupported_fields = set()  # this GPU has NVLink and PCIe byte counters
    g.field_ts_us = 1_000_000_000
    probe = started(fake)
    probe.poll(time.monotonic_ns())
    g.field_ts_us += 250_000  # 0.25 s later by NVML's clock, whatever the poll's own timing
    g.energy_mj += 100_000  # 100 J in 0.25 s = 400 W
    g.nvlink_tx_kib += 1000
    g.nvlink_rx_kib += 3000
    g.pcie_tx_bytes += 5_000_000
    snap = gpu_snap(probe.poll(time.monotonic_ns()))
    assert snap.power_avg_w == pytest.approx(400.0)
    assert snap.nvlink_tx_bytes_s == pytest.approx(1000 * 1024 / 0.25)
    assert snap.nvlink_rx_bytes_s == pytest.approx(3000 * 1024 / 0.25)
    assert snap.pcie_tx_bytes_s == pytest.approx(20_000_000)
    assert snap.energy_mj == 1_100_000  # the raw counter, in mJ like DCGM
    probe.stop()


def test_pcie_replay_counter_wraps_at_32_bits():
    assert counter_delta(0xFFFFFFF0, 0x10, 32) == 0x20
    assert counter_delta(5_000_000, 10, None) is None  # a 64-bit counter going down is a restart, not a wrap
    assert counter_delta(1_000_000_000, 10, 32) is None  # a "wrap" of more than half the range: a restart
    g = FakeGpu()
    g.pcie_replay = 0xFFFFFFFE
    g.add_replays(5)
    assert g.pcie_replay == 3


def test_counter_rate_survives_restart_and_cached_reads():
    rate = CounterRate(scale=1.0)
    assert rate.update(100, 1_000_000_000) is rate.rate and not rate.rate
    assert rate.update(300, 2_000_000_000) == pytest.approx(200.0)
    assert rate.update(300, 2_000_000_000) == pytest.approx(200.0)  # same timestamp: NVML's cached value
    assert not rate.update(50, 3_000_000_000)  # driver reload: unknown, never negative
    assert rate.update(150, 4_000_000_000) == pytest.approx(100.0)


def test_gpm_metrics_are_ratios_between_polls():
    fake = FakeNvml(1)
    fake.gpus[0].gpm = {1: 96.0, 2: 88.5, 3: 40.0, 5: 71.0, 10: 33.0, 20: 10.0, 21: 2.0}
    probe = started(fake)
    snap = gpu_snap(probe.poll(time.monotonic_ns()))
    assert snap.gpm.sm_active == pytest.approx(0.885)
    assert snap.gpm.tensor_active == pytest.approx(0.71)
    assert snap.gpm.dram_active == pytest.approx(0.33)
    assert snap.gpm.fp64_active is None  # not answered by this GPU: unknown, not 0
    assert snap.pcie_tx_bytes_s == pytest.approx(10 * MIB)  # no PCIe counters here: GPM's rate
    assert fake.calls["nvmlGpmSampleGet"] == 2  # one at start, one per poll (buffers swap)
    probe.stop()


def test_gpm_unsupported_gpu_reports_no_prof_values():
    fake = FakeNvml(1)
    fake.gpus[0].is_gpm_supported = False
    probe = started(fake)
    snap = gpu_snap(probe.poll(time.monotonic_ns()))
    assert snap.gpm == GpmMetrics() and "no gpm" in probe.status().path
    probe.stop()


def test_unsupported_calls_are_not_repeated_each_poll():
    fake = FakeNvml(1)
    fake.gpus[0].unsupported |= {"nvmlDeviceGetEncoderUtilization", "nvmlDeviceGetPerformanceState"}
    probe = started(fake, interval_s=0.01, detail_interval_s=0.01)
    for _ in range(5):
        snap = gpu_snap(probe.poll(time.monotonic_ns()))
        time.sleep(0.011)
    assert snap.pstate is None and snap.enc_util_pct is None
    assert fake.calls["nvmlDeviceGetPerformanceState"] == 1
    assert fake.calls["nvmlDeviceGetEncoderUtilization"] == 1
    assert fake.calls["nvmlDeviceGetFieldValues"] == 5
    probe.stop()


def test_nvml_samples_are_converted_to_the_monotonic_clock():
    fake = FakeNvml(1)
    now_wall_us = time.time_ns() // 1000
    fake.gpus[0].samples = {1: [(now_wall_us - 300_000, 50), (now_wall_us - 100_000, 90)],
                            0: [(now_wall_us - 200_000, 301_000)]}
    probe = started(fake)
    t0 = time.monotonic_ns()
    result = probe.poll(t0)
    util = [s for s in result.samples if s.series == "gpu.util_pct.nvml"]
    power = [s for s in result.samples if s.series == "gpu.power_w.nvml"]
    assert [s.value for s in util] == [50, 90] and power[0].value == pytest.approx(301.0)
    assert abs(util[1].t_ns - (t0 - 100_000_000)) < 20_000_000  # 100 ms before now on CLOCK_MONOTONIC
    assert util[1].t_ns - util[0].t_ns == 200_000_000
    # the next detail read asks only for newer samples and gets none (NOT_FOUND), so no duplicates
    probe._next_detail_ns = 0
    assert not [s for s in probe.poll(time.monotonic_ns()).samples if s.series.endswith(".nvml")]
    probe.stop()


def test_processes_with_memory_util_and_command(tmp_path):
    fake = FakeNvml(1)
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "comm").write_text("python3\n")
    (tmp_path / "4242" / "cmdline").write_bytes(b"python3\0serve.py\0--tp\0002\0")
    now_us = time.time_ns() // 1000
    g = fake.gpus[0]
    g.processes = [{"pid": 4242, "used": 3 * 1024 * MIB, "kind": "C"}, {"pid": 77, "used": None, "kind": "CG"}]
    g.proc_util = [(4242, now_us - 900_000, 20, 5), (4242, now_us - 100_000, 93, 41), (77, now_us - 10_000_000, 9, 1)]
    probe = started(fake, tmp_path)
    procs = {p.pid: p for p in gpu_snap(probe.poll(time.monotonic_ns())).processes}
    assert procs[4242].comm == "python3" and procs[4242].cmdline == "python3 serve.py --tp 2"
    assert procs[4242].used_mib == 3072 and procs[4242].type == "C"
    assert (procs[4242].sm_util_pct, procs[4242].mem_util_pct) == (93, 41)  # newest sample
    assert procs[77].comm == "proc77"  # not in our /proc: NVML's name
    assert procs[77].used_mib is None and procs[77].type == "C+G"
    assert procs[77].sm_util_pct is None  # its only sample is 10 s old: unknown, not 9 %
    probe.stop()


def test_gpu_lost_mid_run_emits_event_and_others_keep_sampling():
    fake = FakeNvml(3)
    probe = started(fake)
    probe.poll(time.monotonic_ns())
    fake.gpus[1].is_lost = True
    fake.gpus[2].power_mw = 450_000
    result = probe.poll(time.monotonic_ns())
    lost = [e for e in result.events if e.kind == "gpu_lost"]
    assert len(lost) == 1 and lost[0].attrs["gpu"] == 1 and lost[0].attrs["uuid"] == fake.gpus[1].uuid
    assert "NVML error 15" in lost[0].attrs["reason"]  # GPU_IS_LOST, with the call that saw it
    snaps = {g.index: g for g in result.snapshot.gpus}
    assert snaps[1].is_lost and snaps[1].power_w is None  # no stale numbers for a lost GPU
    assert snaps[2].power_w == pytest.approx(450.0) and snaps[0].power_w is not None
    assert probe.status().state is ProbeState.DEGRADED and "GPU 1 lost" in probe.status().reason
    calls = fake.calls["nvmlDeviceGetPowerUsage"]
    result = probe.poll(time.monotonic_ns())
    assert not [e for e in result.events if e.kind == "gpu_lost"]  # reported once
    assert fake.calls["nvmlDeviceGetPowerUsage"] == calls + 2  # the lost GPU is no longer asked
    probe.stop()


def test_all_gpus_lost_makes_the_probe_unavailable_but_poll_still_works():
    fake = FakeNvml(1)
    probe = started(fake)
    fake.gpus[0].is_lost = True
    result = probe.poll(time.monotonic_ns())
    assert result.snapshot.gpus[0].is_lost
    assert probe.status().state is ProbeState.UNAVAILABLE
    probe.stop()


@pytest.mark.parametrize("fake, words", [
    (FakeNvml(1, init_error=12), "libnvidia-ml.so.1 not found"),
    (FakeNvml(1, init_error=9), "driver is not loaded"),
    (FakeNvml(0), "NVML sees no NVIDIA GPU"),
    (FakeNvml(1, driver="418.87.01"), "older than R450"),
])
def test_unavailable_hosts_say_why(fake, words):
    probe = GpuProbe(GpuConfig(is_xid_enabled=False), nvml=fake)
    with pytest.raises(ProbeUnavailable, match=words):
        probe.start()
    assert probe.status().state is ProbeState.UNAVAILABLE and words in probe.status().reason
    assert not fake.is_initialized  # NVML shut down again
    probe.stop()
    assert probe.status().state is ProbeState.STOPPED


def test_missing_binding_says_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    probe = GpuProbe(GpuConfig())
    with pytest.raises(ProbeUnavailable, match="pip install nvidia-ml-py"):
        probe.start()


def test_real_pynvml_on_a_host_without_driver_is_unavailable_and_says_why():
    """The real binding and the real (absent) libnvidia-ml of this machine, not the fake."""
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this host has an NVIDIA driver; tests/gpu covers it")
    pytest.importorskip("pynvml", reason="nvidia-ml-py not installed")
    probe = GpuProbe(GpuConfig())
    with pytest.raises(ProbeUnavailable, match="libnvidia-ml.so.1 not found|driver is not loaded"):
        probe.start()
    probe.stop()
    requirements = {r.name: r.is_met for r in GpuProbe.requirements()}
    assert requirements["nvidia-ml-py"] and not requirements["/dev/nvidiactl"]


def test_selected_gpus_only_and_bad_index_named():
    fake = FakeNvml(4)
    probe = started(fake, gpus=[1, 3])
    assert [g.index for g in probe.poll(time.monotonic_ns()).snapshot.gpus] == [1, 3]
    probe.stop()
    with pytest.raises(ProbeUnavailable, match=r"probes.gpu.gpus lists GPU 9 but NVML sees 4"):
        started(FakeNvml(4), gpus=[9])


def test_throttle_interval_becomes_an_event():
    fake = FakeNvml(1)
    probe = started(fake)
    fake.gpus[0].reasons = 0x1  # idle is not throttling
    assert not probe.poll(time.monotonic_ns()).events
    fake.gpus[0].reasons = 0x4
    t_start = time.monotonic_ns()
    snap = gpu_snap(probe.poll(t_start))
    assert snap.throttle_since_ns == t_start
    fake.gpus[0].reasons = 0x0
    t_end = time.monotonic_ns()
    events = probe.poll(t_end).events
    assert [(e.kind, e.start_ns, e.end_ns, e.attrs["reasons"]) for e in events] == \
        [("gpu_throttle", t_start, t_end, ["sw_power_cap"])]
    probe.stop()


def test_core_samples_carry_gpu_label_and_monotonic_time():
    fake = FakeNvml(2)
    probe = started(fake, is_samples_enabled=False)
    t = time.monotonic_ns()
    samples = probe.poll(t).samples
    power = sorted((s.labels["gpu"], s.value) for s in samples if s.series == "gpu.power_w")
    assert power == [("0", 70.0), ("1", 70.0)]
    assert all(s.t_ns == t for s in samples if not s.series.startswith("gpu.process"))
    probe.stop()


@pytest.mark.parametrize("kwargs, key", [({"interval_s": 0.001}, "interval_s"),
                                         ({"interval_s": 1.0, "detail_interval_s": 0.5}, "detail_interval_s"),
                                         ({"xid_wait_ms": 0}, "xid_wait_ms"), ({"gpus": [0, 0]}, "gpus"),
                                         ({"gpus": [-1]}, "gpus[0]"), ({"kmsg_path": ""}, "kmsg_path")])
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        GpuConfig(**kwargs)
    assert err.value.key == key


def test_config_loads_from_toml_section():
    from gpusleuth.agent.config import from_mapping
    cfg = from_mapping({"probes": {"gpu": {"interval_s": 0.25, "gpus": [0, 2]}}})
    assert cfg.probes["gpu"].interval_s == 0.25 and cfg.probes["gpu"].gpus == [0, 2]
    with pytest.raises(ConfigError, match="probes.gpu.xid_wait_ms"):
        from_mapping({"probes": {"gpu": {"xid_wait_ms": 99999}}})


def test_snapshot_crosses_the_control_socket_as_json_and_back():
    import json
    import warnings
    fake = FakeNvml(2)
    probe = started(fake)
    result = probe.poll(time.monotonic_ns())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a value of another type than its field declares would warn here
        wire = json.loads(json.dumps(snapshot_codec.encode("gpu", result.snapshot)))
    assert wire["gpus"][1]["uuid"] == fake.gpus[1].uuid
    assert snapshot_codec.decode("gpu", wire) == result.snapshot
    assert abs(wall_offset_ns() - (time.time_ns() - time.monotonic_ns())) < 5_000_000
    probe.stop()


def test_old_driver_without_v3_process_calls_does_not_break_polling():
    fake = FakeNvml(1, missing_symbols=("nvmlDeviceGetComputeRunningProcesses_v3",))
    fake.gpus[0].processes = [{"pid": 4242, "used": MIB}]
    probe = started(fake)
    snap = gpu_snap(probe.poll(time.monotonic_ns()))
    assert snap.processes == [] and snap.power_w == 70.0  # unknown, and the rest still sampled
    assert "nvmlDeviceGetComputeRunningProcesses:FunctionNotFound" in probe.status().details["nvml_errors"]
    probe.stop()


def test_pcie_rate_falls_back_to_nvml_throughput_on_the_detail_interval_only():
    fake = FakeNvml(1)
    fake.gpus[0].gpm = {2: 50.0}  # GPM without its PCIe metrics, and no PCIe byte counters
    fake.gpus[0].pcie_tx_bytes, fake.gpus[0].pcie_rx_bytes = 3 * 1024 * 1000, 1024 * 1000  # NVML: KB/s
    probe = started(fake)
    first = gpu_snap(probe.poll(time.monotonic_ns()))
    second = gpu_snap(probe.poll(time.monotonic_ns()))
    assert first.pcie_tx_bytes_s == second.pcie_tx_bytes_s == 3 * 1024 * 1000
    assert fake.calls["nvmlDeviceGetPcieThroughput"] == 2  # tx+rx once: each call blocks NVML for 20 ms
    assert "pcie from nvml_throughput" in probe.status().path
    probe.stop()


def test_gpm_falls_back_to_core_metrics_when_the_driver_refuses_the_list():
    fake = FakeNvml(1)
    real_get = fake.nvmlGpmMetricsGet

    def old_driver(req):  # a driver that rejects the whole request when it sees an id it does not know
        if any(m.metricId == 61 for m in req.metrics[:req.numMetrics]):
            raise fake.NVMLError_InvalidArgument(2)
        return real_get(req)
    fake.nvmlGpmMetricsGet = old_driver
    probe = started(fake)
    assert gpu_snap(probe.poll(time.monotonic_ns())).gpm == GpmMetrics()
    assert gpu_snap(probe.poll(time.monotonic_ns())).gpm.sm_active == pytest.approx(0.12)
    probe.stop()


def test_pcie_counters_never_trigger_the_slow_fallback():
    fake = FakeNvml(1)
    fake.gpus[0].unsupported_fields = set()  # PCIe byte counters exist
    probe = started(fake)
    first = gpu_snap(probe.poll(time.monotonic_ns()))
    assert first.pcie_tx_bytes_s is None  # a counter rate needs two reads: unknown, not GPM's or 0
    fake.gpus[0].pcie_tx_bytes += 1000
    assert gpu_snap(probe.poll(time.monotonic_ns())).pcie_tx_bytes_s > 0
    assert fake.calls["nvmlDeviceGetPcieThroughput"] == 0 and "pcie from counters" in probe.status().path
    probe.stop()


def test_counters_and_gpm_are_read_on_their_own_slower_tier():
    fake = FakeNvml(1)
    probe = started(fake, counters_interval_s=1.0)
    t0 = 10**12
    try:
        for i in range(10):  # 1 s of 100 ms polls
            probe.poll(t0 + i * 100_000_000)
        tier = fake.calls.get("nvmlDeviceGetFieldValues", 0)
        basic = fake.calls.get("nvmlDeviceGetUtilizationRates", 0)
        probe.poll(t0 + 1_000_000_000)
    finally:
        probe.stop()
    assert basic >= 10  # utilisation stays on every poll
    assert tier == 1  # field values once per counters interval, reused in between
    assert fake.calls.get("nvmlDeviceGetFieldValues", 0) == 2


def test_energy_counter_is_read_on_its_own_tier_and_carried_between():
    fake = FakeNvml(1)
    g = fake.gpus[0]
    g.field_ts_us = 1_000_000_000
    asked: list[bool] = []
    real = fake.nvmlDeviceGetFieldValues

    def recording(h, field_ids):
        asked.append(83 in [f[0] if isinstance(f, tuple) else f for f in field_ids])  # TOTAL_ENERGY_CONSUMPTION
        return real(h, field_ids)

    fake.nvmlDeviceGetFieldValues = recording
    probe = started(fake, counters_interval_s=1.0, energy_interval_s=5.0)
    t0, snaps = 10**12, []
    try:
        for i in range(11):  # 10 s of 1 s counter reads
            g.field_ts_us += 1_000_000
            g.energy_mj += 300_000  # 300 W
            snaps.append(gpu_snap(probe.poll(t0 + i * 1_000_000_000)))
    finally:
        probe.stop()
    assert asked == [True, False, False, False, False, True, False, False, False, False, True]
    assert snaps[3].energy_mj == snaps[0].energy_mj  # the last read, not a made-up value
    assert snaps[5].energy_mj - snaps[0].energy_mj == 5 * 300_000
    assert snaps[5].power_avg_w == pytest.approx(300.0) and snaps[7].power_avg_w == pytest.approx(300.0)
    assert fake.calls.get("nvmlDeviceGetTotalEnergyConsumption", 0) == 0  # the field answered: no direct call
