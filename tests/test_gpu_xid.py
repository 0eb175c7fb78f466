"""XID and critical events: the event thread, decoding, per-code counts, pids from the kernel log, prompt stop."""
from __future__ import annotations

import time

import pytest
from fake_nvml import FakeNvml

from gpusleuth.probes.base import ProbeState
from gpusleuth.probes.gpu.probe import GpuConfig, GpuProbe
from gpusleuth.probes.gpu.xid_kmsg import parse_line, pci_key
from gpusleuth.probes.gpu.xid_table import xid_name, xid_severity

XID_EVENT, DBE_EVENT = 0x8, 0x2


def started(fake: FakeNvml, **cfg) -> GpuProbe:
    cfg.setdefault("xid_wait_ms", 50)
    cfg.setdefault("is_kmsg_enabled", False)
    probe = GpuProbe(GpuConfig(**cfg), nvml=fake)
    probe.start()
    return probe


def poll_until(probe: GpuProbe, predicate, timeout_s: float = 3.0):
    """Poll like the agent does until `predicate(events)` holds; returns (all events, last snapshot)."""
    events, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe.poll(time.monotonic_ns())
        events += result.events
        if predicate(events):
            return events, result.snapshot
        time.sleep(0.02)
    raise AssertionError(f"condition not met in {timeout_s} s; events: {events}")


def test_xid_becomes_event_with_name_and_counts_per_code():
    fake = FakeNvml(2)
    probe = started(fake)
    assert probe.watcher is not None and probe.watcher.registered[1] == ["xid", "double_bit_ecc"]
    for code in (79, 13, 13):
        assert fake.inject_event(1, XID_EVENT, code) == 1
    fake.inject_event(0, DBE_EVENT)
    events, snap = poll_until(probe, lambda ev: len(ev) == 4)
    xids = [e for e in events if e.kind == "gpu_xid"]
    assert sorted(e.attrs["xid"] for e in xids) == [13, 13, 79]
    fell = next(e for e in xids if e.attrs["xid"] == 79)
    assert (fell.attrs["name"], fell.attrs["severity"], fell.attrs["gpu"]) == ("gpu_fallen_off_bus", "fatal", 1)
    assert fell.attrs["uuid"] == fake.gpus[1].uuid and fell.start_ns <= time.monotonic_ns()
    assert [e.kind for e in events if e.kind != "gpu_xid"] == ["gpu_double_bit_ecc"]
    gpu1 = snap.gpus[1]
    assert gpu1.xid_counts == {13: 2, 79: 1}  # a counter per code, not just the last value
    assert gpu1.last_xid in (13, 79) and snap.gpus[0].event_counts == {"double_bit_ecc": 1}
    probe.stop()


def test_xid_names_table():
    assert xid_name(48) == "double_bit_ecc_error" and xid_severity(48) == "fatal"
    assert xid_name(31) == "gpu_memory_page_fault" and xid_severity(31) == "app"
    assert xid_name(4242) == "xid_4242" and xid_severity(4242) == "unknown"


@pytest.mark.parametrize("line, want", [
    ("4,1234,56789012,-;NVRM: Xid (PCI:0000:18:00): 31, pid=2879, name=python3, Ch 00000008, intr 10000000.",
     ((0, 0x18, 0), 31, 2879, "python3", 56789012000)),
    ("NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
     ((0, 0x3b, 0), 79, 0, "", 0)),
    ("3,99,1000,-;NVRM: Xid (PCI:0000:af:00): 43, Ch 00000010", ((0, 0xaf, 0), 43, 0, "", 1_000_000)),
])
def test_kernel_log_xid_lines_parse(line, want):
    rec = parse_line(line)
    assert (rec.pci, rec.code, rec.pid, rec.comm, rec.t_ns) == want


def test_non_xid_lines_are_ignored_and_bus_ids_normalise():
    assert parse_line("6,1,2,-;NVRM: loading NVIDIA UNIX x86_64 Kernel Module 570.86.15") is None
    assert pci_key("00000000:18:00.0") == pci_key("0000:18:00") == (0, 0x18, 0)
    assert pci_key("garbage") is None


def test_xid_pid_comes_from_the_kernel_log(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("6,1,100,-;NVRM: Xid (PCI:0000:18:00): 31, pid=1, name=old, before the agent started\n")
    fake = FakeNvml(1)
    probe = started(fake, is_kmsg_enabled=True, kmsg_path=str(kmsg))
    boot_us = time.monotonic_ns() // 1000
    with kmsg.open("a") as f:
        f.write(f"4,7,{boot_us},-;NVRM: Xid (PCI:0000:18:00): 31, pid=2879, name=python3, Ch 00000008, "
                "intr 10000000. MMU Fault: ENGINE GRAPHICS\n")
    fake.inject_event(0, XID_EVENT, 31)
    events, _ = poll_until(probe, lambda ev: bool(ev))
    assert (events[0].pid, events[0].comm) == (2879, "python3")  # not the stale line from before start
    assert "MMU Fault" in events[0].attrs["text"]
    assert "kmsg pids" in probe.status().path
    probe.stop()


def test_xid_without_kernel_log_line_is_still_reported(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    fake = FakeNvml(1)
    probe = started(fake, is_kmsg_enabled=True, kmsg_path=str(kmsg))
    fake.inject_event(0, XID_EVENT, 48)
    t0 = time.monotonic()
    events, _ = poll_until(probe, lambda ev: bool(ev))
    assert events[0].pid == 0 and events[0].attrs["xid"] == 48
    assert 0.9 < time.monotonic() - t0 < 2.5  # held for its kernel-log line for match_s (1 s), then published
    probe.stop()


def test_unreadable_kmsg_degrades_only_the_pid(tmp_path):
    probe = started(FakeNvml(1), is_kmsg_enabled=True, kmsg_path=str(tmp_path / "absent"))
    assert probe.status().state is ProbeState.OK and "kmsg" not in probe.status().path
    assert "absent" in probe.status().details["kmsg_error"]
    assert probe.watcher is not None and probe.watcher.is_running
    probe.stop()


def test_stop_is_prompt_and_frees_the_event_set():
    fake = FakeNvml(1)
    probe = started(fake, xid_wait_ms=300)
    time.sleep(0.05)  # the thread is inside nvmlEventSetWait now
    t0 = time.monotonic()
    probe.stop()
    assert time.monotonic() - t0 < 0.3 + 0.25
    assert fake.event_sets[0].is_freed and not fake.is_initialized
    probe.stop()  # twice is fine


def test_waiting_thread_does_not_slow_polls():
    fake = FakeNvml(2)
    probe = started(fake, xid_wait_ms=2000)  # the thread sits in one long wait the whole time
    time.sleep(0.05)
    durations = []
    for _ in range(30):
        t0 = time.perf_counter()
        probe.poll(time.monotonic_ns())
        durations.append(time.perf_counter() - t0)
    assert probe.watcher.is_running and probe.watcher.waits == 0  # still in its first wait
    assert max(durations) < 0.25  # would be ~2 s if a poll waited on the event thread
    fake.inject_event(0, XID_EVENT, 8)  # wakes the wait; stop then returns at once
    probe.stop()


def test_no_event_support_degrades_with_reason_and_sampling_goes_on():
    fake = FakeNvml(2)
    for g in fake.gpus:
        g.supported_events = 0
    probe = started(fake)
    assert probe.status().state is ProbeState.DEGRADED
    assert "XID events unavailable: no GPU supports NVML critical-event registration" in probe.status().reason
    snap = probe.poll(time.monotonic_ns()).snapshot
    assert snap.gpus[0].power_w == 70.0 and snap.xid.is_running is False
    probe.stop()


def test_only_supported_event_types_are_registered():
    fake = FakeNvml(2)
    fake.gpus[0].supported_events = XID_EVENT  # no ECC events on this one
    probe = started(fake)
    assert probe.watcher.registered == {0: ["xid"], 1: ["xid", "double_bit_ecc"]}
    assert fake.event_sets[0].masks == {0: XID_EVENT, 1: XID_EVENT | DBE_EVENT}
    probe.stop()


def test_registration_falls_back_to_xid_only_when_the_combination_is_refused():
    fake = FakeNvml(1)
    real_register = fake.nvmlDeviceRegisterEvents

    def picky(handle, mask, es):  # a driver that lists ECC events as supported but refuses them together
        if mask != XID_EVENT:
            raise fake.NVMLError_NotSupported(3)
        return real_register(handle, mask, es)
    fake.nvmlDeviceRegisterEvents = picky
    probe = started(fake)
    assert probe.watcher.registered == {0: ["xid"]} and probe.status().state is ProbeState.OK
    probe.stop()
