"""The probe through the real nvidia-ml-py binding (pynvml.py) over a fake libnvidia-ml.

Each C entry point the probe reaches is emulated at the ctypes level — out-parameters through byref, struct
versions, the two-call size queries, opaque handles as pointers — and answered from tests/fake_nvml state. This
checks how we use pynvml's structs and calling conventions (bytes vs str, nvmlMemory_v2, field-value arrays,
nvmlGpmMetricsGet_t, nvmlEventData_t), which the Python-level fake cannot.
"""
from __future__ import annotations

import ctypes
import time
from types import SimpleNamespace
from typing import Any

import pytest
from fake_nvml import FakeMig, FakeNvml
from fake_nvml import NVMLError as FakeError

pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py not installed")

from gpusleuth.probes.gpu.probe import GpuConfig, GpuProbe  # noqa: E402

INSUFFICIENT_SIZE = 7
MEMBERS = {0: "dVal", 1: "uiVal", 3: "ullVal"}


def _out(ref: Any) -> Any:
    return ref._obj  # byref(x) -> x


def _addr(ptr: Any) -> int:
    return ctypes.cast(ptr, ctypes.c_void_p).value


def _set_ptr(ptr: Any, addr: int) -> None:
    ctypes.cast(ctypes.pointer(ptr), ctypes.POINTER(ctypes.c_void_p))[0] = addr


class _Fn:
    """A C function object: pynvml sets .restype on some (nvmlErrorString)."""

    def __init__(self, f: Any) -> None:
        self.f, self.restype = f, None

    def __call__(self, *args: Any) -> Any:
        return self.f(*args)


class FakeLib:
    """libnvidia-ml.so.1 as pynvml sees it, backed by a FakeNvml."""

    def __init__(self, py: FakeNvml) -> None:
        self.py = py
        self._bufs: list[Any] = []
        self._by_addr: dict[int, Any] = {}
        self._addr_of: dict[int, int] = {}
        self.nvmlErrorString = _Fn(lambda code: b"fake NVML error")

    def _addr_for(self, obj: Any) -> int:
        if id(obj) not in self._addr_of:
            buf = ctypes.create_string_buffer(8)
            self._bufs.append(buf)
            self._addr_of[id(obj)] = ctypes.addressof(buf)
            self._by_addr[ctypes.addressof(buf)] = obj
        return self._addr_of[id(obj)]

    def _obj(self, ptr: Any) -> Any:
        return self._by_addr[_addr(ptr)]

    def _call(self, name: str, *args: Any) -> tuple[int, Any]:
        try:
            return 0, getattr(self.py, name)(*args)
        except FakeError as exc:
            return exc.value, None

    def _scalar(self, name: str, out: Any, *args: Any) -> int:
        ret, value = self._call(name, *args)
        if ret == 0:
            _out(out).value = value
        return ret

    def _string(self, name: str, buf: Any, size: Any, *args: Any) -> int:
        ret, value = self._call(name, *args)
        if ret == 0:
            buf.value = value.encode()[: size.value - 1]
        return ret

    def _handle_out(self, name: str, out: Any, *args: Any) -> int:
        ret, obj = self._call(name, *args)
        if ret == 0:
            _set_ptr(_out(out), self._addr_for(obj))
        return ret

    # library and identity
    def nvmlInitWithFlags(self, flags): return self._call("nvmlInit")[0]
    def nvmlShutdown(self): return self._call("nvmlShutdown")[0]
    def nvmlSystemGetDriverVersion(self, b, n): return self._string("nvmlSystemGetDriverVersion", b, n)
    def nvmlSystemGetNVMLVersion(self, b, n): return self._string("nvmlSystemGetNVMLVersion", b, n)
    def nvmlSystemGetProcessName(self, pid, b, n): return self._string("nvmlSystemGetProcessName", b, n, pid.value)
    def nvmlSystemGetCudaDriverVersion(self, o): return self._scalar("nvmlSystemGetCudaDriverVersion", o)
    def nvmlDeviceGetCount_v2(self, o): return self._scalar("nvmlDeviceGetCount", o)
    def nvmlDeviceGetHandleByIndex_v2(self, i, o): return self._handle_out("nvmlDeviceGetHandleByIndex", o, i.value)
    def nvmlDeviceGetIndex(self, h, o): return self._scalar("nvmlDeviceGetIndex", o, self._obj(h))
    def nvmlDeviceGetUUID(self, h, b, n): return self._string("nvmlDeviceGetUUID", b, n, self._obj(h))
    def nvmlDeviceGetName(self, h, b, n): return self._string("nvmlDeviceGetName", b, n, self._obj(h))
    def nvmlDeviceGetMinorNumber(self, h, o): return self._scalar("nvmlDeviceGetMinorNumber", o, self._obj(h))

    def nvmlDeviceGetPciInfo_v3(self, h, out):
        ret, v = self._call("nvmlDeviceGetPciInfo", self._obj(h))
        if ret == 0:
            _out(out).busId = v.busId
        return ret

    # per-poll values
    def nvmlDeviceGetUtilizationRates(self, h, out):
        ret, v = self._call("nvmlDeviceGetUtilizationRates", self._obj(h))
        if ret == 0:
            _out(out).gpu, _out(out).memory = v.gpu, v.memory
        return ret

    def nvmlDeviceGetClockInfo(self, h, c, o): return self._scalar("nvmlDeviceGetClockInfo", o, self._obj(h), c.value)
    def nvmlDeviceGetPowerUsage(self, h, o): return self._scalar("nvmlDeviceGetPowerUsage", o, self._obj(h))
    def nvmlDeviceGetEnforcedPowerLimit(self, h, o):
        return self._scalar("nvmlDeviceGetEnforcedPowerLimit", o, self._obj(h))
    def nvmlDeviceGetTemperature(self, h, s, o): return self._scalar("nvmlDeviceGetTemperature", o, self._obj(h), s)
    def nvmlDeviceGetPerformanceState(self, h, o): return self._scalar("nvmlDeviceGetPerformanceState", o, self._obj(h))
    def nvmlDeviceGetTotalEnergyConsumption(self, h, o):
        return self._scalar("nvmlDeviceGetTotalEnergyConsumption", o, self._obj(h))
    def nvmlDeviceGetPcieReplayCounter(self, h, o):
        return self._scalar("nvmlDeviceGetPcieReplayCounter", o, self._obj(h))
    def nvmlDeviceGetPcieThroughput(self, h, c, o):
        return self._scalar("nvmlDeviceGetPcieThroughput", o, self._obj(h), c.value)
    def nvmlDeviceGetCurrentClocksEventReasons(self, h, o):
        return self._scalar("nvmlDeviceGetCurrentClocksEventReasons", o, self._obj(h))

    def nvmlDeviceGetMemoryInfo_v2(self, h, out):
        mem = _out(out)
        if mem.version != pynvml.nvmlMemory_v2:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        ret, v = self._call("nvmlDeviceGetMemoryInfo", self._obj(h), mem.version)
        if ret == 0:
            mem.total, mem.reserved, mem.free, mem.used = v.total, v.reserved, v.free, v.used
        return ret

    def nvmlDeviceGetFieldValues(self, h, count, values):
        arr = _out(values)
        ids = [(arr[i].fieldId, arr[i].scopeId) for i in range(count.value)]
        ret, got = self._call("nvmlDeviceGetFieldValues", self._obj(h), ids)
        if ret == 0:
            for i, src in enumerate(got):
                dst = arr[i]
                dst.timestamp, dst.valueType, dst.nvmlReturn = src.timestamp, src.valueType, src.nvmlReturn
                member = MEMBERS[src.valueType]
                setattr(dst.value, member, getattr(src.value, member))
        return ret

    def _pair(self, name, h, a, b):
        ret, v = self._call(name, self._obj(h))
        if ret == 0:
            _out(a).value, _out(b).value = v
        return ret

    def nvmlDeviceGetEncoderUtilization(self, h, u, p): return self._pair("nvmlDeviceGetEncoderUtilization", h, u, p)
    def nvmlDeviceGetDecoderUtilization(self, h, u, p): return self._pair("nvmlDeviceGetDecoderUtilization", h, u, p)
    def nvmlDeviceGetMigMode(self, h, c, p): return self._pair("nvmlDeviceGetMigMode", h, c, p)

    # processes and samples: the NVML two-call size protocol
    def _procs(self, name, h, count_ref, arr):
        ret, procs = self._call(name, self._obj(h))
        count = _out(count_ref)
        if ret == 0 and (arr is None or count.value < len(procs)):
            count.value = len(procs)
            return INSUFFICIENT_SIZE if procs else 0
        for i, p in enumerate(procs or []):
            arr[i].pid, arr[i].gpuInstanceId, arr[i].computeInstanceId = p.pid, p.gpuInstanceId, p.computeInstanceId
            arr[i].usedGpuMemory = (1 << 64) - 1 if p.usedGpuMemory is None else p.usedGpuMemory
        if ret == 0:
            count.value = len(procs)
        return ret

    def nvmlDeviceGetComputeRunningProcesses_v3(self, h, c, a):
        return self._procs("nvmlDeviceGetComputeRunningProcesses_v3", h, c, a)

    def nvmlDeviceGetGraphicsRunningProcesses_v3(self, h, c, a):
        return self._procs("nvmlDeviceGetGraphicsRunningProcesses_v3", h, c, a)

    def nvmlDeviceGetProcessUtilization(self, h, arr, count_ref, ts):
        ret, samples = self._call("nvmlDeviceGetProcessUtilization", self._obj(h), ts.value)
        count = _out(count_ref)
        if ret == 0 and (arr is None or count.value < len(samples)):
            count.value = len(samples)
            return INSUFFICIENT_SIZE
        for i, s in enumerate(samples or []):
            arr[i].pid, arr[i].timeStamp, arr[i].smUtil, arr[i].memUtil = s.pid, s.timeStamp, s.smUtil, s.memUtil
        return ret

    def nvmlDeviceGetSamples(self, h, stype, ts, vtype, count_ref, arr):
        ret, got = self._call("nvmlDeviceGetSamples", self._obj(h), stype.value, ts.value)
        if ret:
            return ret
        value_type, samples = got
        _out(vtype).value = value_type
        count = _out(count_ref)
        if arr is not None:
            for i, s in enumerate(samples[:count.value]):
                arr[i].timeStamp, arr[i].sampleValue.uiVal = s.timeStamp, s.sampleValue.uiVal
        count.value = len(samples) if arr is None else min(count.value, len(samples))
        return 0

    # GPM
    def nvmlGpmQueryDeviceSupport(self, h, out):
        ret, v = self._call("nvmlGpmQueryDeviceSupport", self._obj(h))
        if ret == 0:
            assert _out(out).version == pynvml.NVML_GPM_SUPPORT_VERSION
            _out(out).isSupportedDevice = v.isSupportedDevice
        return ret

    def nvmlGpmSampleAlloc(self, out): return self._handle_out("nvmlGpmSampleAlloc", out)
    def nvmlGpmSampleFree(self, s): return self._call("nvmlGpmSampleFree", self._obj(s))[0]
    def nvmlGpmSampleGet(self, h, s): return self._call("nvmlGpmSampleGet", self._obj(h), self._obj(s))[0]
    def nvmlGpmMigSampleGet(self, h, gi, s):
        return self._call("nvmlGpmMigSampleGet", self._obj(h), gi, self._obj(s))[0]

    def nvmlGpmMetricsGet(self, ref):
        req = _out(ref)
        py_req = SimpleNamespace(version=req.version, numMetrics=req.numMetrics, sample1=self._obj(req.sample1),
                                 sample2=self._obj(req.sample2),
                                 metrics=[SimpleNamespace(metricId=req.metrics[i].metricId, nvmlReturn=0, value=0.0)
                                          for i in range(req.numMetrics)])
        ret, _ = self._call("nvmlGpmMetricsGet", py_req)
        for i, m in enumerate(py_req.metrics if ret == 0 else []):
            req.metrics[i].value, req.metrics[i].nvmlReturn = m.value, m.nvmlReturn
        return ret

    # MIG
    def nvmlDeviceGetMaxMigDeviceCount(self, h, o):
        return self._scalar("nvmlDeviceGetMaxMigDeviceCount", o, self._obj(h))
    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, i, o):
        return self._handle_out("nvmlDeviceGetMigDeviceHandleByIndex", o, self._obj(h), i.value)
    def nvmlDeviceGetGpuInstanceId(self, h, o): return self._scalar("nvmlDeviceGetGpuInstanceId", o, self._obj(h))
    def nvmlDeviceGetComputeInstanceId(self, h, o):
        return self._scalar("nvmlDeviceGetComputeInstanceId", o, self._obj(h))

    # events
    def nvmlEventSetCreate(self, out): return self._handle_out("nvmlEventSetCreate", out)
    def nvmlEventSetFree(self, es): return self._call("nvmlEventSetFree", self._obj(es))[0]
    def nvmlDeviceGetSupportedEventTypes(self, h, o):
        return self._scalar("nvmlDeviceGetSupportedEventTypes", o, self._obj(h))
    def nvmlDeviceRegisterEvents(self, h, mask, es):
        return self._call("nvmlDeviceRegisterEvents", self._obj(h), mask.value, self._obj(es))[0]

    def nvmlEventSetWait_v2(self, es, data_ref, timeout):
        ret, ev = self._call("nvmlEventSetWait_v2", self._obj(es), timeout.value)
        if ret == 0:
            data = _out(data_ref)
            data.device = ctypes.cast(ctypes.c_void_p(self._addr_for(ev.device)), pynvml.c_nvmlDevice_t)
            data.eventType, data.eventData = ev.eventType, ev.eventData
            data.gpuInstanceId, data.computeInstanceId = ev.gpuInstanceId, ev.computeInstanceId
        return ret


@pytest.fixture
def real_binding(monkeypatch):
    """pynvml wired to a fake libnvidia-ml; yields the FakeNvml whose state answers."""
    def wire(fake: FakeNvml) -> FakeNvml:
        monkeypatch.setattr(pynvml, "nvmlLib", FakeLib(fake))
        monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
        return fake
    return wire


def test_full_poll_through_real_pynvml(real_binding, tmp_path):
    fake = real_binding(FakeNvml(2))
    g = fake.gpus[1]
    g.power_mw, g.mem_used, g.mem_reserved, g.reasons = 401_500, 12_345 * (1 << 20), 600 << 20, 0x4
    g.unsupported_fields = set()  # NVLink and PCIe byte counters answer on this one
    g.gpm = {2: 91.0, 5: 55.0, 10: 30.0}
    g.processes = [{"pid": 9001, "used": 5 << 30}]
    g.proc_util = [(9001, time.time_ns() // 1000, 77, 20)]
    g.samples = {1: [(time.time_ns() // 1000 - 50_000, 64)]}
    probe = GpuProbe(GpuConfig(xid_wait_ms=20, is_kmsg_enabled=False, counters_interval_s=0), nvml=pynvml, proc_root=tmp_path)
    probe.start()
    assert probe.status().state.value == "ok", probe.status()
    g.field_ts_us = time.time_ns() // 1000
    first = probe.poll(time.monotonic_ns())  # also the detail poll: processes, NVML sample buffers
    g.field_ts_us += 500_000
    g.nvlink_tx_kib += 2048
    g.pcie_rx_bytes += 10_000_000
    result = probe.poll(time.monotonic_ns())
    snap = result.snapshot
    gpu = snap.gpus[1]
    assert snap.driver_version == "570.86.15" and snap.nvml_version == "12.570.86.15"
    assert gpu.uuid == g.uuid and gpu.pci_bus_id == g.bus_id and gpu.name == g.name  # str, not bytes
    assert gpu.power_w == pytest.approx(401.5) and gpu.fb_used_mib == 12_345 and gpu.fb_reserved_mib == 600
    assert gpu.power_limit_w == pytest.approx(700.0)  # nvmlDeviceGetEnforcedPowerLimit through the C ABI
    assert gpu.clock_event_reason_names == ["sw_power_cap"]
    assert gpu.nvlink_tx_bytes_s == pytest.approx(2048 * 1024 / 0.5, rel=1e-4)  # 1.1e-6 off once on a loaded box
    assert gpu.pcie_rx_bytes_s == pytest.approx(20_000_000) and "pcie from counters" in probe.status().path
    assert gpu.gpm.sm_active == pytest.approx(0.91) and gpu.gpm.tensor_active == pytest.approx(0.55)
    assert [(p.pid, p.used_mib, p.sm_util_pct) for p in gpu.processes] == [(9001, 5120, 77)]
    assert [s.value for s in first.samples if s.series == "gpu.util_pct.nvml"] == [64]
    assert not probe.status().details["nvml_errors"], probe.status().details
    probe.stop()


def test_xid_event_through_real_pynvml(real_binding):
    fake = real_binding(FakeNvml(2))
    probe = GpuProbe(GpuConfig(xid_wait_ms=20, is_kmsg_enabled=False, counters_interval_s=0), nvml=pynvml)
    probe.start()
    fake.inject_event(1, pynvml.nvmlEventTypeXidCriticalError, 94)
    deadline, events = time.monotonic() + 3, []
    while not events and time.monotonic() < deadline:
        events = probe.poll(time.monotonic_ns()).events
        time.sleep(0.02)
    assert [(e.kind, e.attrs["gpu"], e.attrs["xid"], e.attrs["name"]) for e in events] == \
        [("gpu_xid", 1, 94, "contained_ecc_error")]  # GPU found from nvmlEventData_t.device
    probe.stop()


def test_mig_through_real_pynvml(real_binding):
    fake = real_binding(FakeNvml(1))
    fake.gpus[0].mig_mode = 1
    fake.gpus[0].migs = [FakeMig(gi_id=5, profile="4g.40gb", gpm={2: 60.0})]
    probe = GpuProbe(GpuConfig(is_xid_enabled=False, counters_interval_s=0), nvml=pynvml)
    probe.start()
    inst = probe.poll(time.monotonic_ns()).snapshot.gpus[0].mig_instances
    assert [(i.gi_id, i.profile, i.gpm.sm_active) for i in inst] == [(5, "4g.40gb", 0.6)]
    probe.stop()


def test_lost_gpu_through_real_pynvml(real_binding):
    fake = real_binding(FakeNvml(2))
    probe = GpuProbe(GpuConfig(is_xid_enabled=False, counters_interval_s=0), nvml=pynvml)
    probe.start()
    fake.gpus[0].is_lost = True
    result = probe.poll(time.monotonic_ns())
    assert [e.attrs["gpu"] for e in result.events if e.kind == "gpu_lost"] == [0]
    assert "GPU is lost" in next(e for e in result.events if e.kind == "gpu_lost").attrs["reason"]
    assert result.snapshot.gpus[1].power_w == 70.0
    probe.stop()
