"""The GPU probe on real GPUs (H100, H200): values against nvidia-smi taken around the same poll, a GEMM load seen as
SM activity and utilisation, a second process seen with its pid, the XID thread never blocking polls, every GPU
sampled. Run with -s to see the FIGURE lines quoted in the report."""
from __future__ import annotations

import statistics
import time

import pytest

pytestmark = pytest.mark.gpu

SMI_FIELDS = ["index", "uuid", "memory.used", "memory.reserved", "temperature.gpu", "power.draw", "clocks.sm",
              "clocks.mem"]
# ours -> (nvidia-smi field, check(ours, lo, hi) with lo/hi the smaller/larger of the readings before and after)
CHECKS = {
    "fb_used_mib": ("memory.used", lambda v, lo, hi: lo - 1 <= v <= hi + 1),  # to the MiB
    "gpu_temp_c": ("temperature.gpu", lambda v, lo, hi: lo - 2 <= v <= hi + 2),  # ±2 °C
    "power_w": ("power.draw", lambda v, lo, hi: lo * 0.9 <= v <= hi * 1.1),  # ±10 %
    "sm_clock_mhz": ("clocks.sm", lambda v, lo, hi: lo * 0.95 <= v <= hi * 1.05),  # ±5 %
    "mem_clock_mhz": ("clocks.mem", lambda v, lo, hi: lo * 0.95 <= v <= hi * 1.05),
}


def _compare(tools, probe) -> tuple[list[str], list[str]]:
    before = {int(r["index"]): r for r in tools.smi(SMI_FIELDS)}
    snap = probe.poll(time.monotonic_ns()).snapshot
    after = {int(r["index"]): r for r in tools.smi(SMI_FIELDS)}
    failures, figures = [], []
    for gpu in snap.gpus:
        i = gpu.index
        for ours_key, (field, check) in CHECKS.items():
            a, b = tools.number(before[i][field]), tools.number(after[i][field])
            ours = getattr(gpu, ours_key)
            if a is None or b is None:
                continue  # nvidia-smi itself has no value for it on this board
            lo, hi = min(a, b), max(a, b)
            figures.append(f"gpu{i} {ours_key}={ours} smi[{field}]={a}..{b}")
            if ours is None or not check(ours, lo, hi):
                failures.append(f"GPU {i} {ours_key}: ours {ours}, nvidia-smi {field} {a}/{b} "
                                f"(memory.reserved {before[i]['memory.reserved']})")
    return failures, figures


def test_values_match_nvidia_smi_in_the_same_second(gpu_tools, make_probe):
    probe = make_probe(is_xid_enabled=False)
    probe.poll(time.monotonic_ns())
    for _attempt in range(3):  # a shared, live GPU can change between readings; a steady one passes at once
        t0 = time.monotonic()
        failures, figures = _compare(gpu_tools, probe)
        bracket_s = time.monotonic() - t0
        assert bracket_s < 3.0, f"nvidia-smi took {bracket_s:.1f} s: readings not close enough in time"
        if not failures:
            break
        time.sleep(0.5)
    print(f"FIGURE values-vs-nvidia-smi (smi before+after within {bracket_s:.2f} s):", "; ".join(figures))
    assert not failures, failures


def test_gemm_load_drives_sm_active_and_utilisation(gpu_tools, make_probe):
    target = gpu_tools.count - 1  # the last GPU: on multi-GPU hosts this also proves per-GPU attribution
    probe = make_probe(is_xid_enabled=False, detail_interval_s=0.5)
    with gpu_tools.process(gpu_tools.GEMM, target, 8.0) as load:
        gpu_tools.poll_for(probe, 1.5)  # let clocks and NVML's averaging windows settle
        polls = gpu_tools.poll_for(probe, 4.0)
    per_gpu = {}
    for _, result in polls:
        for g in result.snapshot.gpus:
            per_gpu.setdefault(g.index, []).append(g)
    mine = per_gpu[target]
    util = statistics.median(g.util_gpu_pct for g in mine)
    sm_active = statistics.median(g.gpm.sm_active for g in mine)
    tensor = statistics.median(g.gpm.tensor_active for g in mine)
    pids = {p.pid: p for g in mine for p in g.processes}
    sm_util = max((p.sm_util_pct or 0) for g in mine for p in g.processes if p.pid == load.pid) \
        if load.pid in pids else None
    print(f"FIGURE gemm gpu{target}: util {util} %, sm_active {sm_active:.3f}, tensor_active {tensor:.3f}, "
          f"process sm_util max {sm_util} %, power {mine[-1].power_w} W")
    assert util > 90
    assert sm_active > 0.80
    assert load.pid in pids, f"GEMM process {load.pid} not in per-process data {sorted(pids)}"
    assert sm_util is not None and sm_util > 50
    for other, snaps in per_gpu.items():
        if other != target:  # an idle neighbour must not show the load
            assert statistics.median(g.gpm.sm_active for g in snaps) < sm_active - 0.3


def test_second_process_memory_appears_with_its_pid(gpu_tools, make_probe):
    probe = make_probe(is_xid_enabled=False, detail_interval_s=0.1)
    with gpu_tools.process(gpu_tools.HOLD, 0, 2048, 30.0) as holder:
        deadline, found = time.monotonic() + 10, None
        while time.monotonic() < deadline and found is None:
            snap = probe.poll(time.monotonic_ns()).snapshot
            found = next((p for p in snap.gpus[0].processes if p.pid == holder.pid), None)
            time.sleep(0.1)
    print(f"FIGURE second process: {found}")
    assert found is not None, f"pid {holder.pid} never appeared"
    assert found.used_mib >= 2048 and found.comm.startswith(("python", "pt_main"))


def _poll_durations(probe, n: int = 100) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        probe.poll(time.monotonic_ns())
        out.append(time.perf_counter() - t0)
    return sorted(out)


def test_xid_thread_never_blocks_the_poll_loop(gpu_tools, make_probe):
    plain = make_probe(is_xid_enabled=False, is_samples_enabled=False, is_process_enabled=False)
    base = _poll_durations(plain)
    plain.stop()
    probe = make_probe(is_xid_enabled=True, xid_wait_ms=500, is_samples_enabled=False, is_process_enabled=False)
    watcher = probe.watcher
    assert watcher is not None and watcher.is_running, probe.status().reason
    waits0 = watcher.waits
    t0 = time.monotonic()
    with_thread = _poll_durations(probe)
    time.sleep(max(0.0, 1.2 - (time.monotonic() - t0)))
    p99_base, p99_with = base[98] * 1e3, with_thread[98] * 1e3
    print(f"FIGURE xid thread: poll p50 {base[50] * 1e3:.2f} -> {with_thread[50] * 1e3:.2f} ms, p99 {p99_base:.2f} "
          f"-> {p99_with:.2f} ms, max {with_thread[-1] * 1e3:.2f} ms; waits {watcher.waits - waits0}; "
          f"registered {watcher.registered}")
    assert watcher.waits - waits0 >= 2  # the thread kept cycling through 500 ms waits meanwhile
    assert p99_with <= p99_base * 1.5 + 2.0  # no poll waited on nvmlEventSetWait
    assert with_thread[-1] < 0.25
    t_stop = time.monotonic()
    probe.stop()
    assert time.monotonic() - t_stop < 0.5 + 0.5


def test_every_gpu_is_sampled(gpu_tools, make_probe):
    probe = make_probe(counters_interval_s=0.2)  # counters on every poll here (default tier: every 2 s)
    for _ in range(4):  # counter rates need two reads with distinct NVML timestamps
        snap = probe.poll(time.monotonic_ns()).snapshot
        time.sleep(0.3)
    uuids = {r["uuid"] for r in gpu_tools.smi(["uuid"])}
    assert {g.uuid for g in snap.gpus} == uuids and len(snap.gpus) == gpu_tools.count
    for g in snap.gpus:
        print(f"FIGURE gpu{g.index} {g.name}: power {g.power_w} W, temp {g.gpu_temp_c} C, "
              f"mem temp {g.mem_temp_c} C, util {g.util_gpu_pct} %, fb {g.fb_used_mib} MiB, "
              f"sm_active {g.gpm.sm_active}, pcie tx {g.pcie_tx_bytes_s} B/s, nvlink tx "
              f"{g.nvlink_tx_bytes_s} B/s, ecc dbe {g.ecc_dbe_vol}, remap {g.remapped_rows_unc}, "
              f"pstate {g.pstate}, reasons {g.clock_event_reason_names}, mig {g.is_mig}")
        assert not g.is_lost
        for value, key in ((g.power_w, "power_w"), (g.gpu_temp_c, "gpu_temp_c"), (g.sm_clock_mhz, "sm_clock_mhz"),
                           (g.fb_used_mib, "fb_used_mib"), (g.energy_mj, "energy_mj"),
                           (g.clock_event_reasons, "clock_event_reasons")):
            assert value is not None, f"GPU {g.index} {key}"
        if not g.is_mig:
            assert g.util_gpu_pct is not None and g.gpm.sm_active is not None
            assert g.pcie_tx_bytes_s is not None  # from PCIe counters or GPM
    print(f"FIGURE status: {probe.status().to_dict()}")
    import json
    import warnings

    from gpusleuth.probes import snapshot_codec
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a value of another type than its field declares (NVML's) would warn here
        wire = json.loads(json.dumps(snapshot_codec.encode("gpu", snap)))
    assert snapshot_codec.decode("gpu", wire) == snap  # what the TUI gets back is what the probe published


def test_nvml_sample_timestamps_land_on_the_monotonic_clock(gpu_tools, make_probe):
    probe = make_probe(is_xid_enabled=False, detail_interval_s=0.1)
    probe.poll(time.monotonic_ns())
    time.sleep(1.0)
    t = time.monotonic_ns()
    samples = [s for s in probe.poll(t).samples if s.series.endswith(".nvml")]
    assert samples, "nvmlDeviceGetSamples gave nothing in 1 s"
    newest = max(s.t_ns for s in samples)
    print(f"FIGURE nvml samples: {len(samples)} in 1 s, newest {(t - newest) / 1e6:.1f} ms before the poll")
    # wall µs converted to CLOCK_MONOTONIC ns. NVML stamps samples with the GPU's timer, which runs ahead of this
    # host's CLOCK_REALTIME by tens of ms under the lent VMs (newest sample 18 ms "after" the poll on an H100, 60 ms
    # on 4x H200), so the upper bound allows 1 s of skew; a unit or clock mix-up would be off by far more.
    assert t - 3_000_000_000 < newest <= t + 1_000_000_000


def test_dcgm_exporter_names_on_real_gpus(gpu_tools, make_probe):
    pytest.importorskip("prometheus_client", reason="prometheus-client is not installed on this host")
    from prometheus_client import CollectorRegistry

    from gpusleuth.agent.store import Store
    from gpusleuth.exporters.dcgm import DcgmCollector
    probe = make_probe(is_xid_enabled=False)
    probe.poll(time.monotonic_ns())
    store = Store(8 << 20)
    store.set_snapshot("gpu", probe.poll(time.monotonic_ns()).snapshot)
    registry = CollectorRegistry()
    registry.register(DcgmCollector(store))
    families = {m.name: m for m in registry.collect()}
    for name in ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_FB_USED",
                 "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_PROF_SM_ACTIVE"):
        assert len(families[name].samples) == gpu_tools.count, name
