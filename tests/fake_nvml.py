"""A fake NVML binding for CPU tests: pynvml's function names, constants and NVMLError subclasses, and its quirks.

An instance of FakeNvml stands in for the `pynvml` module. Tests set each FakeGpu's state directly. Quirks kept:
power in mW, energy in mJ, memory in bytes with v1 counting reserved memory as used, the PCIe replay counter is a
32-bit counter that wraps, sample and event timestamps are wall-clock µs, "no new samples" is NVML_ERROR_NOT_FOUND,
event waits end with NVML_ERROR_TIMEOUT, a lost GPU answers NVML_ERROR_GPU_IS_LOST to every call, device-wide
utilisation is NOT_SUPPORTED under MIG, and registering an unsupported event type is NOT_SUPPORTED.
"""
from __future__ import annotations

import string
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

_CODES = {"UNINITIALIZED": 1, "INVALID_ARGUMENT": 2, "NOT_SUPPORTED": 3, "NO_PERMISSION": 4,
          "ALREADY_INITIALIZED": 5, "NOT_FOUND": 6, "INSUFFICIENT_SIZE": 7, "DRIVER_NOT_LOADED": 9, "TIMEOUT": 10,
          "LIBRARY_NOT_FOUND": 12, "FUNCTION_NOT_FOUND": 13, "GPU_IS_LOST": 15, "RESET_REQUIRED": 16,
          "LIB_RM_VERSION_MISMATCH": 18, "NO_DATA": 21, "UNKNOWN": 999}


class NVMLLibraryMismatchError(Exception):
    """pynvml raises this (not an NVMLError) from its unversioned process-list calls on an older driver."""


class NVMLError(Exception):
    """Like pynvml: NVMLError(code) builds the matching NVMLError_<Name> subclass."""

    _by_code: dict[int, type] = {}

    def __new__(cls, value: int = 999):
        if cls is NVMLError:
            cls = NVMLError._by_code.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int = 999) -> None:
        super().__init__(value)

    def __str__(self) -> str:
        return f"NVML error {self.value}"


_ERRORS: dict[str, type] = {}
for _name, _code in _CODES.items():
    _cls_name = "NVMLError_" + string.capwords(_name, "_").replace("_", "")
    _cls = type(_cls_name, (NVMLError,), {"__new__": (lambda c: lambda typ, *a: NVMLError.__new__(typ, c))(_code)})
    NVMLError._by_code[_code] = _cls
    _ERRORS[_cls_name] = _cls
    globals()[_cls_name] = _cls

CONSTANTS = {
    "NVML_SUCCESS": 0, **{f"NVML_ERROR_{k}": v for k, v in _CODES.items()},
    "NVML_CLOCK_GRAPHICS": 0, "NVML_CLOCK_SM": 1, "NVML_CLOCK_MEM": 2, "NVML_TEMPERATURE_GPU": 0,
    "NVML_TOTAL_POWER_SAMPLES": 0, "NVML_GPU_UTILIZATION_SAMPLES": 1, "NVML_MEMORY_UTILIZATION_SAMPLES": 2,
    "NVML_PCIE_UTIL_TX_BYTES": 0, "NVML_PCIE_UTIL_RX_BYTES": 1, "NVML_DEVICE_MIG_DISABLE": 0,
    "NVML_DEVICE_MIG_ENABLE": 1, "NVML_PSTATE_UNKNOWN": 32, "NVML_GPM_METRICS_GET_VERSION": 1,
    "NVML_GPM_METRIC_MAX": 210, "nvmlMemory_v2": 0x02000028, "NVML_VALUE_TYPE_DOUBLE": 0,
    "NVML_VALUE_TYPE_UNSIGNED_INT": 1, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": 3,
    "nvmlEventTypeSingleBitEccError": 0x1, "nvmlEventTypeDoubleBitEccError": 0x2, "nvmlEventTypePState": 0x4,
    "nvmlEventTypeXidCriticalError": 0x8, "nvmlEventTypeClock": 0x10, "nvmlEventTypePowerSourceChange": 0x80,
    "nvmlEventTypeSingleBitEccErrorStorm": 0x200, "nvmlEventTypeDramRetirementEvent": 0x400,
    "nvmlEventTypeDramRetirementFailure": 0x800, "nvmlEventTypeNonFatalPoisonError": 0x1000,
    "nvmlEventTypeFatalPoisonError": 0x2000, "nvmlEventTypeGpuUnavailableError": 0x4000,
    "nvmlEventTypeGpuRecoveryAction": 0x8000,
}
NO_INSTANCE = 0xFFFFFFFF
# field id -> (FakeGpu attribute, NVML value type)
FIELD_SOURCES = {82: ("mem_temp_c", 1), 83: ("energy_mj", 3), 94: ("pcie_replay", 1), 3: ("ecc_sbe_vol", 3),
                 4: ("ecc_dbe_vol", 3), 5: ("ecc_sbe_agg", 3), 6: ("ecc_dbe_agg", 3), 142: ("remap_cor", 1),
                 143: ("remap_unc", 1), 144: ("remap_pending", 1), 145: ("remap_failure", 1),
                 138: ("nvlink_tx_kib", 3), 139: ("nvlink_rx_kib", 3), 197: ("pcie_tx_bytes", 3),
                 198: ("pcie_rx_bytes", 3)}
_MEMBERS = {0: "dVal", 1: "uiVal", 3: "ullVal"}


def _function_not_found(*args: Any, **kwargs: Any) -> Any:
    raise NVMLError(13)  # what pynvml raises when the driver's libnvidia-ml lacks the C symbol


def wall_us() -> int:
    return time.time_ns() // 1000


@dataclass
class FakeMig:
    gi_id: int
    ci_id: int = 0
    profile: str = "1g.10gb"
    mem_total: int = 10 << 30
    mem_used: int = 1 << 30
    mem_reserved: int = 64 << 20
    gpm: dict[int, float] = field(default_factory=lambda: {2: 40.0, 3: 20.0})


@dataclass
class FakeGpu:
    index: int = 0
    name: str = "NVIDIA H100 80GB HBM3"
    util_gpu: int = 0
    util_mem: int = 0
    sm_clock: int = 1980
    mem_clock: int = 2619
    power_mw: int = 70_000
    power_limit_mw: int = 700_000
    temp_c: int = 33
    mem_temp_c: int = 40
    reasons: int = 0x1
    pstate: int = 0
    mem_total: int = 80 << 30
    mem_reserved: int = 512 << 20
    mem_used: int = 600 << 20
    energy_mj: int = 1_000_000
    pcie_replay: int = 0
    pcie_tx_bytes: int = 0
    pcie_rx_bytes: int = 0
    nvlink_tx_kib: int = 0
    nvlink_rx_kib: int = 0
    ecc_sbe_vol: int = 0
    ecc_dbe_vol: int = 0
    ecc_sbe_agg: int = 0
    ecc_dbe_agg: int = 0
    remap_cor: int = 0
    remap_unc: int = 0
    remap_pending: int = 0
    remap_failure: int = 0
    enc: int = 0
    dec: int = 0
    field_ts_us: int | None = None  # None: stamp fields with the wall clock now
    processes: list[dict[str, Any]] = field(default_factory=list)  # pid, used (bytes|None), kind, gi, ci
    proc_util: list[tuple[int, int, int, int]] = field(default_factory=list)  # (pid, ts_us, sm, mem)
    samples: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # sample type -> [(ts_us, value)]
    gpm: dict[int, float] = field(default_factory=lambda: {1: 10.0, 2: 12.0, 3: 8.0, 5: 3.0, 10: 20.0})
    is_gpm_supported: bool = True
    supported_events: int = 0x8 | 0x2 | 0x4
    unsupported: set[str] = field(default_factory=set)  # NVML function names answering NOT_SUPPORTED
    unsupported_fields: set[int] = field(default_factory=lambda: {138, 139, 197, 198})
    is_lost: bool = False
    mig_mode: int = 0
    migs: list[FakeMig] = field(default_factory=list)

    @property
    def uuid(self) -> str:
        return f"GPU-{self.index:08x}-fake-4000-8000-{self.index:012x}"

    @property
    def bus_id(self) -> str:
        return f"00000000:{0x18 + self.index * 0x10:02X}:00.0"

    def add_replays(self, n: int) -> None:
        self.pcie_replay = (self.pcie_replay + n) & 0xFFFFFFFF  # c_uint in NVML: wraps at 2**32


@dataclass(eq=False)
class Handle:
    gpu: FakeGpu
    mig: FakeMig | None = None


@dataclass(eq=False)
class GpmSample:
    gpu: Any = None
    gi_id: int | None = None
    seq: int = -1
    values: dict[int, float] = field(default_factory=dict)
    is_freed: bool = False


class EventSet:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queue: deque[Any] = deque()
        self.masks: dict[int, int] = {}  # gpu index -> registered mask
        self.is_freed = False


class FakeNvml:
    """Acts as the pynvml module for one test. `absent` hides binding functions (an older nvidia-ml-py);
    `missing_symbols` makes them raise FUNCTION_NOT_FOUND (an older driver)."""

    NVMLError = NVMLError
    NVMLLibraryMismatchError = NVMLLibraryMismatchError

    def __init__(self, gpus: int | list[FakeGpu] = 1, driver: str = "570.86.15", init_error: int | None = None,
                 absent: tuple[str, ...] = (), missing_symbols: tuple[str, ...] = ()) -> None:
        self.gpus = [FakeGpu(index=i) for i in range(gpus)] if isinstance(gpus, int) else gpus
        self.driver, self.init_error = driver, init_error
        self.absent, self.missing_symbols = set(absent), set(missing_symbols)
        self.calls: Counter[str] = Counter()
        self.is_initialized = False
        self.event_sets: list[EventSet] = []
        self.is_wait_lost_aware = False  # True: an event wait answers GPU_IS_LOST while a registered GPU is lost
        self._gpm_seq = 0
        self._handles = [Handle(g) for g in self.gpus]
        self._mig_handles: dict[tuple[int, int], Handle] = {}
        for name, value in {**CONSTANTS, **_ERRORS}.items():
            setattr(self, name, value)

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and name in object.__getattribute__(self, "absent"):
            raise AttributeError(name)
        attr = object.__getattribute__(self, name)
        if name.startswith("nvml") and callable(attr) and not isinstance(attr, type):
            object.__getattribute__(self, "calls")[name] += 1
            if name in object.__getattribute__(self, "missing_symbols"):
                return _function_not_found
        return attr

    # -- helpers -------------------------------------------------------------------------------------------------
    def _check(self, name: str, handle: Handle | None = None) -> FakeGpu | None:
        if not self.is_initialized:
            raise NVMLError(1)
        if handle is None:
            return None
        if handle.gpu.is_lost:
            raise NVMLError(15)
        if name in handle.gpu.unsupported:
            raise NVMLError(3)
        return handle.gpu

    def inject_event(self, index: int, event_type: int, data: int = 0) -> int:
        """Deliver an event to every set this GPU registered that type on; returns how many sets got it."""
        gpu, n = self.gpus[index], 0
        for es in self.event_sets:
            if es.masks.get(index, 0) & event_type and not es.is_freed:
                with es.cond:
                    es.queue.append(SimpleNamespace(device=self._handles[index], eventType=event_type,
                                                    eventData=data, gpuInstanceId=NO_INSTANCE,
                                                    computeInstanceId=NO_INSTANCE))
                    es.cond.notify_all()
                n += 1
        assert gpu is not None
        return n

    # -- library ---------------------------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.is_initialized = True

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")
        self.is_initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check("")
        return self.driver

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._check("")
        return "12." + self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check("")
        return 12080

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        self._check("")
        return f"proc{pid}"

    def nvmlDeviceGetCount(self) -> int:
        self._check("")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._check("")
        if index >= len(self.gpus):
            raise NVMLError(2)
        if self.gpus[index].is_lost:
            raise NVMLError(15)
        return self._handles[index]

    # -- identity --------------------------------------------------------------------------------------------------
    def nvmlDeviceGetIndex(self, h: Handle) -> int:
        return self._check("nvmlDeviceGetIndex", h).index

    def nvmlDeviceGetUUID(self, h: Handle) -> str:
        gpu = self._check("nvmlDeviceGetUUID", h)
        return f"MIG-{gpu.index}-{h.mig.gi_id}-{h.mig.ci_id}" if h.mig else gpu.uuid

    def nvmlDeviceGetName(self, h: Handle) -> str:
        gpu = self._check("nvmlDeviceGetName", h)
        return f"{gpu.name} MIG {h.mig.profile}" if h.mig else gpu.name

    def nvmlDeviceGetPciInfo(self, h: Handle) -> Any:
        gpu = self._check("nvmlDeviceGetPciInfo", h)
        return SimpleNamespace(busId=gpu.bus_id.encode(), busIdLegacy=gpu.bus_id[4:].encode())

    def nvmlDeviceGetMinorNumber(self, h: Handle) -> int:
        return self._check("nvmlDeviceGetMinorNumber", h).index

    # -- per-poll values -------------------------------------------------------------------------------------------
    def nvmlDeviceGetUtilizationRates(self, h: Handle) -> Any:
        gpu = self._check("nvmlDeviceGetUtilizationRates", h)
        if gpu.mig_mode:
            raise NVMLError(3)
        return SimpleNamespace(gpu=gpu.util_gpu, memory=gpu.util_mem)

    def nvmlDeviceGetClockInfo(self, h: Handle, clock: int) -> int:
        gpu = self._check("nvmlDeviceGetClockInfo", h)
        return {1: gpu.sm_clock, 0: gpu.sm_clock, 2: gpu.mem_clock}[clock]

    def nvmlDeviceGetPowerUsage(self, h: Handle) -> int:
        return self._check("nvmlDeviceGetPowerUsage", h).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Handle) -> int:
        return self._check("nvmlDeviceGetEnforcedPowerLimit", h).power_limit_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Handle) -> int:
        return self._check("nvmlDeviceGetTotalEnergyConsumption", h).energy_mj

    def nvmlDeviceGetTemperature(self, h: Handle, sensor: int) -> int:
        return self._check("nvmlDeviceGetTemperature", h).temp_c

    def nvmlDeviceGetTemperatureV(self, h: Handle, sensor: int) -> int:
        return self._check("nvmlDeviceGetTemperatureV", h).temp_c

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Handle) -> int:
        return self._check("nvmlDeviceGetCurrentClocksEventReasons", h).reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: Handle) -> int:
        return self._check("nvmlDeviceGetCurrentClocksThrottleReasons", h).reasons

    def nvmlDeviceGetPerformanceState(self, h: Handle) -> int:
        return self._check("nvmlDeviceGetPerformanceState", h).pstate

    def nvmlDeviceGetMemoryInfo(self, h: Handle, version: int | None = None) -> Any:
        gpu = self._check("nvmlDeviceGetMemoryInfo", h)
        src = h.mig or gpu
        total, used, reserved = src.mem_total, src.mem_used, src.mem_reserved
        free = total - used - reserved
        if version:
            if "nvmlDeviceGetMemoryInfo_v2" in self.missing_symbols:
                raise NVMLError(13)
            return SimpleNamespace(version=version, total=total, reserved=reserved, free=free, used=used)
        return SimpleNamespace(total=total, free=free, used=total - free)  # v1: reserved counts as used

    def nvmlDeviceGetFieldValues(self, h: Handle, field_ids: list[Any]) -> list[Any]:
        gpu = self._check("nvmlDeviceGetFieldValues", h)
        out = []
        ts = gpu.field_ts_us if gpu.field_ts_us is not None else wall_us()
        for fid in field_ids:
            fid, scope = fid if isinstance(fid, tuple) else (fid, 0)
            attr, vtype = FIELD_SOURCES.get(fid, (None, 1))
            value = SimpleNamespace(dVal=0.0, uiVal=0, ulVal=0, ullVal=0, sllVal=0, siVal=0, usVal=0)
            ret = 2 if attr is None else 3 if fid in gpu.unsupported_fields else 0
            if ret == 0:
                setattr(value, _MEMBERS[vtype], getattr(gpu, attr))
            out.append(SimpleNamespace(fieldId=fid, scopeId=scope, timestamp=ts if ret == 0 else 0, latencyUsec=0,
                                       valueType=vtype, nvmlReturn=ret, value=value))
        return out

    def nvmlDeviceGetPcieReplayCounter(self, h: Handle) -> int:
        return self._check("nvmlDeviceGetPcieReplayCounter", h).pcie_replay

    def nvmlDeviceGetPcieThroughput(self, h: Handle, counter: int) -> int:
        gpu = self._check("nvmlDeviceGetPcieThroughput", h)
        time.sleep(0.02)  # NVML samples PCIe for 20 ms inside this call
        return (gpu.pcie_tx_bytes if counter == 0 else gpu.pcie_rx_bytes) // 1024

    def nvmlDeviceGetTotalEccErrors(self, h: Handle, error_type: int, counter_type: int) -> int:
        gpu = self._check("nvmlDeviceGetTotalEccErrors", h)
        return [[gpu.ecc_sbe_vol, gpu.ecc_sbe_agg], [gpu.ecc_dbe_vol, gpu.ecc_dbe_agg]][error_type][counter_type]

    def nvmlDeviceGetRemappedRows(self, h: Handle) -> list[int]:
        gpu = self._check("nvmlDeviceGetRemappedRows", h)
        return [gpu.remap_cor, gpu.remap_unc, gpu.remap_pending, gpu.remap_failure]

    def nvmlDeviceGetEncoderUtilization(self, h: Handle) -> list[int]:
        return [self._check("nvmlDeviceGetEncoderUtilization", h).enc, 167000]

    def nvmlDeviceGetDecoderUtilization(self, h: Handle) -> list[int]:
        return [self._check("nvmlDeviceGetDecoderUtilization", h).dec, 167000]

    # -- processes and samples -------------------------------------------------------------------------------------
    def _procs(self, name: str, h: Handle, kind: str) -> list[Any]:
        gpu = self._check(name, h)
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p.get("used"), gpuInstanceId=p.get("gi", NO_INSTANCE),
                                computeInstanceId=p.get("ci", NO_INSTANCE))
                for p in gpu.processes if kind in p.get("kind", "C")]

    def nvmlDeviceGetComputeRunningProcesses_v3(self, h: Handle) -> list[Any]:
        return self._procs("nvmlDeviceGetComputeRunningProcesses_v3", h, "C")

    def nvmlDeviceGetGraphicsRunningProcesses_v3(self, h: Handle) -> list[Any]:
        return self._procs("nvmlDeviceGetGraphicsRunningProcesses_v3", h, "G")

    def nvmlDeviceGetComputeRunningProcesses(self, h: Handle) -> list[Any]:
        if "nvmlDeviceGetComputeRunningProcesses_v3" in self.missing_symbols:  # pynvml's @throwOnVersionMismatch
            raise NVMLLibraryMismatchError("Unversioned function called and the pyNVML version does not match")
        return self._procs("nvmlDeviceGetComputeRunningProcesses", h, "C")

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: Handle) -> list[Any]:
        return self._procs("nvmlDeviceGetGraphicsRunningProcesses", h, "G")

    def nvmlDeviceGetProcessUtilization(self, h: Handle, last_seen_us: int) -> list[Any]:
        gpu = self._check("nvmlDeviceGetProcessUtilization", h)
        if gpu.mig_mode:
            raise NVMLError(3)
        newer = [SimpleNamespace(pid=p, timeStamp=t, smUtil=sm, memUtil=mem, encUtil=0, decUtil=0)
                 for p, t, sm, mem in gpu.proc_util if t > last_seen_us]
        if not newer:
            raise NVMLError(6)  # NOT_FOUND: no samples since last_seen_us
        return newer

    def nvmlDeviceGetSamples(self, h: Handle, sample_type: int, last_seen_us: int) -> tuple[int, list[Any]]:
        gpu = self._check("nvmlDeviceGetSamples", h)
        if gpu.mig_mode:
            raise NVMLError(3)
        rows = [(t, v) for t, v in gpu.samples.get(sample_type, []) if t > last_seen_us]
        if not rows:
            raise NVMLError(6)
        rows = [(0, 0)] + rows  # NVML hands back unused (zeroed) slots of its ring too
        return 1, [SimpleNamespace(timeStamp=t, sampleValue=SimpleNamespace(uiVal=v, dVal=float(v))) for t, v in rows]

    # -- GPM -------------------------------------------------------------------------------------------------------
    def nvmlGpmQueryDeviceSupport(self, h: Handle) -> Any:
        gpu = self._check("nvmlGpmQueryDeviceSupport", h)
        return SimpleNamespace(version=1, isSupportedDevice=int(gpu.is_gpm_supported))

    def nvmlGpmSampleAlloc(self) -> GpmSample:
        self._check("")
        return GpmSample()

    def nvmlGpmSampleFree(self, sample: GpmSample) -> None:
        self._check("")
        sample.is_freed = True

    def nvmlGpmSampleGet(self, h: Handle, sample: GpmSample) -> GpmSample:
        gpu = self._check("nvmlGpmSampleGet", h)
        if not gpu.is_gpm_supported:
            raise NVMLError(3)
        self._gpm_seq += 1
        sample.gpu, sample.gi_id, sample.seq, sample.values = gpu, None, self._gpm_seq, dict(gpu.gpm)
        return sample

    def nvmlGpmMigSampleGet(self, h: Handle, gi_id: int, sample: GpmSample) -> GpmSample:
        gpu = self._check("nvmlGpmMigSampleGet", h)
        mig = next((m for m in gpu.migs if m.gi_id == gi_id), None)
        if mig is None:
            raise NVMLError(2)
        self._gpm_seq += 1
        sample.gpu, sample.gi_id, sample.seq, sample.values = gpu, gi_id, self._gpm_seq, dict(mig.gpm)
        return sample

    def c_nvmlGpmMetricsGet_t(self) -> Any:
        metrics = [SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0)
                   for _ in range(CONSTANTS["NVML_GPM_METRIC_MAX"])]
        return SimpleNamespace(version=0, numMetrics=0, sample1=None, sample2=None, metrics=metrics)

    def nvmlGpmMetricsGet(self, req: Any) -> Any:
        self._check("")
        s1, s2 = req.sample1, req.sample2
        if req.version != 1 or s1 is None or s2 is None or s1.gpu is not s2.gpu or s1.gi_id != s2.gi_id \
                or s2.seq <= s1.seq or s1.is_freed or s2.is_freed:
            raise NVMLError(2)  # samples from different devices, out of order, or never taken
        for m in req.metrics[:req.numMetrics]:
            if m.metricId in s2.values:  # the fake's counters are steady: the interval mean is the current value
                m.value, m.nvmlReturn = s2.values[m.metricId], 0
            else:
                m.value, m.nvmlReturn = 0.0, 3
        return req

    # -- MIG -------------------------------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, h: Handle) -> list[int]:
        gpu = self._check("nvmlDeviceGetMigMode", h)
        return [gpu.mig_mode, gpu.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Handle) -> int:
        self._check("nvmlDeviceGetMaxMigDeviceCount", h)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Handle, i: int) -> Handle:
        gpu = self._check("nvmlDeviceGetMigDeviceHandleByIndex", h)
        if not gpu.mig_mode or i >= len(gpu.migs):
            raise NVMLError(6)
        return self._mig_handles.setdefault((gpu.index, gpu.migs[i].gi_id), Handle(gpu, gpu.migs[i]))

    def nvmlDeviceGetGpuInstanceId(self, h: Handle) -> int:
        self._check("nvmlDeviceGetGpuInstanceId", h)
        if h.mig is None:
            raise NVMLError(2)
        return h.mig.gi_id

    def nvmlDeviceGetComputeInstanceId(self, h: Handle) -> int:
        self._check("nvmlDeviceGetComputeInstanceId", h)
        if h.mig is None:
            raise NVMLError(2)
        return h.mig.ci_id

    # -- events ----------------------------------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> EventSet:
        self._check("")
        es = EventSet()
        self.event_sets.append(es)
        return es

    def nvmlEventSetFree(self, es: EventSet) -> None:
        self._check("")
        es.is_freed = True

    def nvmlDeviceGetSupportedEventTypes(self, h: Handle) -> int:
        return self._check("nvmlDeviceGetSupportedEventTypes", h).supported_events

    def nvmlDeviceRegisterEvents(self, h: Handle, mask: int, es: EventSet) -> None:
        gpu = self._check("nvmlDeviceRegisterEvents", h)
        if mask & ~gpu.supported_events:
            raise NVMLError(3)
        es.masks[gpu.index] = es.masks.get(gpu.index, 0) | mask

    def nvmlEventSetWait_v2(self, es: EventSet, timeout_ms: int) -> Any:
        self._check("")
        if self.is_wait_lost_aware and any(self.gpus[i].is_lost for i in es.masks):
            raise NVMLError(15)
        with es.cond:
            if not es.queue:
                es.cond.wait(timeout_ms / 1000)
            if es.is_freed:
                raise NVMLError(1)
            if not es.queue:
                raise NVMLError(10)  # TIMEOUT
            return es.queue.popleft()

    def nvmlEventSetWait(self, es: EventSet, timeout_ms: int) -> Any:
        return self.nvmlEventSetWait_v2(es, timeout_ms)
