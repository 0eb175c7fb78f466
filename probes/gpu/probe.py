"""GPU probe: NVML sampling of every GPU, per-process use, GPM, NVML sample buffers, XID/critical events, MIG.

Every NVML call goes through probes/gpu/nvml.Nvml (errors become NA; a lost GPU raises GpuLost, which marks that
GPU lost while the others keep sampling). XID and critical events come from an NVML event set in their own thread
(probes/gpu/xid.py). The NVML module is injectable: GpuProbe(config, nvml=fake_module).

The snapshot (`store.snapshot("gpu")`) is a probes/gpu/snapshot.py GpuSnapshot.
Events: gpu_xid (attrs gpu, uuid, xid, name, severity, text; pid/comm from the kernel log where given),
gpu_<kind> for other critical events, gpu_lost, gpu_throttle (interval, attrs reasons).
"""
from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpusleuth.probes.config import ConfigError, check_range
from gpusleuth.probes.base import PollResult, Probe, ProbeState, ProbeUnavailable, Requirement
from gpusleuth.probes.gpu.device import DeviceOptions, GpuDevice
from gpusleuth.probes.gpu.requirements import host_requirements
from gpusleuth.probes.gpu.snapshot import GpuSnapshot, GpuState, XidStatus
from gpusleuth.probes.gpu.nvml import NA, GpuLost, Nvml, NvmlUnavailable, as_text, load_module, or_none
from gpusleuth.probes.records import Event, wall_offset_ns
from gpusleuth.probes.gpu.xid import RawGpuEvent, XidWatcher
from gpusleuth.probes.gpu.xid_kmsg import KmsgReader
from gpusleuth.probes.gpu.xid_table import xid_name, xid_severity

MIN_DRIVER_MAJOR = 450  # field values, remapped rows and memory v2 need newer; those degrade to None per value


@dataclass(slots=True)
class GpuConfig:
    """[probes.gpu] — every key optional."""

    interval_s: float = 0.1  # one full poll of every GPU
    # NVML field values (energy, PCIe/NVLink counters, ECC, row remap, memory temperature) and GPM cost ~5 ms of
    # CPU per GPU per read on H100: read them on this slower tier; utilisation, clocks, power, temperature,
    # throttle reasons and memory stay on every poll.
    counters_interval_s: float = 2.0  # 0: on every poll
    # The energy counter alone costs ~3-4 ms of CPU per read on H100 (the driver asks the board); power is read on
    # every poll anyway, and dcgm-exporter's own default collection interval is 30 s.
    energy_interval_s: float = 10.0  # read with the counters at most this often; 0: with every counters read
    detail_interval_s: float = 5.0  # per-process data, NVML sample buffers, encoder/decoder utilisation
    gpus: list[int] = field(default_factory=list)  # NVML indices to sample; empty = all
    is_gpm_enabled: bool = True
    is_process_enabled: bool = True
    is_samples_enabled: bool = True
    is_xid_enabled: bool = True
    xid_wait_ms: int = 500  # nvmlEventSetWait timeout: bounds how long stop() takes
    is_kmsg_enabled: bool = True  # read /dev/kmsg for the pid of an XID
    kmsg_path: str = "/dev/kmsg"
    process_stale_s: float = 3.0  # per-process utilisation older than this is reported as unknown

    def __post_init__(self) -> None:
        check_range("interval_s", self.interval_s, 0.01, 60)
        check_range("detail_interval_s", self.detail_interval_s, 0.01, 3600)
        check_range("counters_interval_s", self.counters_interval_s, 0, 3600)
        check_range("energy_interval_s", self.energy_interval_s, 0, 3600)
        if self.detail_interval_s < self.interval_s:
            raise ConfigError("detail_interval_s", f"must be >= interval_s ({self.interval_s})")
        if 0 < self.counters_interval_s < self.interval_s:
            raise ConfigError("counters_interval_s", f"must be >= interval_s ({self.interval_s})")
        if 0 < self.energy_interval_s < self.counters_interval_s:
            raise ConfigError("energy_interval_s", f"must be 0 or >= counters_interval_s ({self.counters_interval_s})")
        check_range("xid_wait_ms", self.xid_wait_ms, 10, 5000)
        check_range("process_stale_s", self.process_stale_s, 0.1, 3600)
        for i, index in enumerate(self.gpus):
            check_range(f"gpus[{i}]", index, 0, 255)
        if len(set(self.gpus)) != len(self.gpus):
            raise ConfigError("gpus", "lists a GPU index twice")
        if self.is_kmsg_enabled and not self.kmsg_path:
            raise ConfigError("kmsg_path", "must name the kernel log device (e.g. /dev/kmsg)")


class GpuProbe(Probe):
    """Samples every GPU through NVML; see the module docstring for what it reports."""

    name = "gpu"
    config_class = GpuConfig

    def __init__(self, config: GpuConfig, nvml: Any = None, proc_root: Path = Path("/proc")) -> None:
        super().__init__(config)
        self._nvml_module, self._proc_root = nvml, proc_root
        self.lib: Nvml | None = None
        self.devices: list[GpuDevice] = []
        self.lost_at_start: dict[int, str] = {}
        self.watcher: XidWatcher | None = None
        self.kmsg: KmsgReader | None = None
        self.xid_counts: dict[int, Counter[int]] = {}
        self.last_xid: dict[int, int] = {}
        self.event_counts: dict[int, Counter[str]] = {}
        self.info: dict[str, Any] = {}
        self._next_detail_ns = 0
        self._next_counters_ns = 0
        self._next_energy_ns = 0
        self._xid_error = ""
        self._kmsg_error = ""

    @classmethod
    def requirements(cls) -> list[Requirement]:
        return host_requirements()

    def start(self) -> None:
        """Initialise NVML, open every configured GPU and start the XID thread; ProbeUnavailable says why not."""
        try:
            self.lib = Nvml(load_module(self._nvml_module))
            self.lib.init()
        except NvmlUnavailable as exc:
            self._fail(str(exc))
        lib = self.lib
        driver = as_text(lib.query("nvmlSystemGetDriverVersion"))
        major = driver.split(".")[0]
        if major.isdigit() and int(major) < MIN_DRIVER_MAJOR:
            self._fail(f"NVIDIA driver {driver} is older than R{MIN_DRIVER_MAJOR}: upgrade the driver")
        count = lib.query("nvmlDeviceGetCount")
        if count is NA or int(count) == 0:
            self._fail("NVML sees no NVIDIA GPU (check `nvidia-smi -L` and the container's device list)")
        for index in self.config.gpus:
            if index >= int(count):
                self._fail(f"probes.gpu.gpus lists GPU {index} but NVML sees {count} GPU(s) (0..{int(count) - 1})")
        self.info = {"hostname": socket.gethostname(), "driver_version": driver,
                     "nvml_version": as_text(lib.query("nvmlSystemGetNVMLVersion")),
                     "cuda_driver_version": or_none(lib.query("nvmlSystemGetCudaDriverVersion"))}
        self._open_devices(self.config.gpus or list(range(int(count))))
        if self.config.is_xid_enabled:
            self._start_watcher()
        self._update_status()

    def _fail(self, reason: str) -> None:
        if self.lib is not None:
            self.lib.shutdown()
        self.set_status(ProbeState.UNAVAILABLE, reason)
        raise ProbeUnavailable(reason)

    def _open_devices(self, indices: list[int]) -> None:
        assert self.lib is not None, "start() sets lib first"
        opts = DeviceOptions(self.config.is_gpm_enabled, self.config.is_process_enabled,
                             self.config.is_samples_enabled, self._proc_root, self.config.process_stale_s)
        for index in indices:
            self.xid_counts[index], self.event_counts[index] = Counter(), Counter()
            self.last_xid[index] = 0
            try:
                handle = self.lib.query("nvmlDeviceGetHandleByIndex", index)
                if handle is NA:
                    raise GpuLost("nvmlDeviceGetHandleByIndex gave no handle")
                self.devices.append(GpuDevice(self.lib, index, handle, opts))
            except GpuLost as exc:
                self.lost_at_start[index] = str(exc)

    def _start_watcher(self) -> None:
        assert self.lib is not None, "start() sets lib first"
        if self.config.is_kmsg_enabled:
            self.kmsg = KmsgReader(self.config.kmsg_path)
            if not self.kmsg.open():
                self._kmsg_error, self.kmsg = self.kmsg.error, None
        devices = [(d.index, d.handle, d.pci_bus_id) for d in self.devices]
        self.watcher = XidWatcher(self.lib, devices, self.config.xid_wait_ms, self.kmsg)
        if not self.watcher.start():
            self._xid_error = self.watcher.error
            self.watcher = None

    def poll(self, now_ns: int) -> PollResult:
        """Read every GPU that is not lost; drain XID/critical events; build the snapshot."""
        offset = wall_offset_ns()
        is_detail = now_ns >= self._next_detail_ns
        if is_detail:
            self._next_detail_ns = now_ns + int(self.config.detail_interval_s * 1e9)
        is_counters = now_ns >= self._next_counters_ns or self.config.counters_interval_s == 0
        if is_counters:
            self._next_counters_ns = now_ns + int(self.config.counters_interval_s * 1e9)
        is_energy = is_counters and now_ns >= self._next_energy_ns
        if is_energy:
            self._next_energy_ns = now_ns + int(self.config.energy_interval_s * 1e9)
        result = PollResult()
        for dev in self.devices:
            if dev.is_lost:
                continue
            try:
                samples, events = dev.read(now_ns, offset, is_detail, is_counters, is_energy)
            except GpuLost as exc:
                result.events += self._mark_lost(dev, str(exc), now_ns)
                continue
            result.samples += samples
            result.events += events
        if self.watcher is not None:
            result.events += [self._to_event(raw) for raw in self.watcher.drain()]
        result.snapshot = self._snapshot(now_ns)
        self._update_status()
        return result

    def _mark_lost(self, dev: GpuDevice, reason: str, now_ns: int) -> list[Event]:
        dev.is_lost, dev.lost_reason = True, reason
        ended = dev.throttle.close(now_ns)
        return ended + [Event("gpu_lost", "gpu", now_ns, now_ns,
                              attrs={"gpu": dev.index, "uuid": dev.uuid, "pci_bus_id": dev.pci_bus_id,
                                     "reason": reason})]

    def _to_event(self, raw: RawGpuEvent) -> Event:
        uuid = next((d.uuid for d in self.devices if d.index == raw.gpu), "")
        attrs: dict[str, Any] = {"gpu": raw.gpu, "uuid": uuid}
        if raw.gi_id is not None:
            attrs.update(gi_id=raw.gi_id, ci_id=raw.ci_id)
        self.event_counts.setdefault(raw.gpu, Counter())[raw.kind] += 1
        if raw.kind != "xid":
            return Event(f"gpu_{raw.kind}", "gpu", raw.t_ns, raw.t_ns, attrs={**attrs, "data": raw.data})
        self.xid_counts.setdefault(raw.gpu, Counter())[raw.data] += 1
        self.last_xid[raw.gpu] = raw.data
        attrs.update(xid=raw.data, name=xid_name(raw.data), severity=xid_severity(raw.data), text=raw.text)
        return Event("gpu_xid", "gpu", raw.t_ns, raw.t_ns, pid=raw.pid, comm=raw.comm, attrs=attrs)

    def _snapshot(self, now_ns: int) -> GpuSnapshot:
        gpus = [d.state(**self._counts(d.index)) for d in self.devices]
        gpus += [GpuState(index=i, is_lost=True, lost_reason=reason, **self._counts(i))
                 for i, reason in self.lost_at_start.items()]
        w = self.watcher
        xid = XidStatus(is_running=w.is_running, error=self._xid_error, registered=dict(w.registered), waits=w.waits,
                        lost_waits=w.lost_waits) if w is not None else XidStatus(error=self._xid_error)
        return GpuSnapshot(t_ns=now_ns, **self.info, gpus=sorted(gpus, key=lambda g: g.index), xid=xid)

    def _counts(self, index: int) -> dict[str, Any]:
        return {"xid_counts": dict(sorted(self.xid_counts.get(index, {}).items())),
                "last_xid": self.last_xid.get(index, 0), "event_counts": dict(self.event_counts.get(index, {}))}

    def _update_status(self) -> None:
        lost = [d.index for d in self.devices if d.is_lost] + list(self.lost_at_start)
        problems = []
        if lost:
            problems.append(f"GPU {', '.join(map(str, sorted(lost)))} lost")
        if self.config.is_xid_enabled and self.watcher is None:
            problems.append(f"XID events unavailable: {self._xid_error}")
        elif self.watcher is not None and not self.watcher.is_running:
            problems.append("XID thread stopped")
        n_ok = len(self.devices) - sum(d.is_lost for d in self.devices)
        if n_ok == 0:
            state = ProbeState.UNAVAILABLE
        else:
            state = ProbeState.DEGRADED if problems else ProbeState.OK
        self.set_status(state, "; ".join(problems), self._path(), **self._details())

    def _path(self) -> str:
        parts = [f"nvml {self.info.get('nvml_version', '?')}, driver {self.info.get('driver_version', '?')}, "
                 f"{len(self.devices)} GPU(s)"]
        parts.append("gpm" if any(d.is_gpm_supported for d in self.devices) else "no gpm")
        parts.append("pcie from " + ",".join(sorted({d.pcie_path for d in self.devices if not d.is_lost}) or {"-"}))
        mig = [d.index for d in self.devices if d.is_mig]
        if mig:
            parts.append(f"MIG on GPU {','.join(map(str, mig))}: per-instance memory+GPM, no device utilisation")
        parts.append("xid thread" + (" + kmsg pids" if self.kmsg else "") if self.watcher else "no xid")
        return "; ".join(parts)

    def _details(self) -> dict[str, Any]:
        assert self.lib is not None, "status is only built after start()"
        return {"nvml_errors": dict(self.lib.errors), "missing_functions": self.lib.missing_functions,
                "kmsg_error": self.kmsg.error if self.kmsg else self._kmsg_error}

    def stop(self) -> None:
        """Stop the XID thread (within xid_wait_ms), free GPM buffers, shut NVML down. Safe twice."""
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self.kmsg is not None:
            self.kmsg.close()
            self.kmsg = None
        for dev in self.devices:
            dev.close()
        self.devices = []
        if self.lib is not None:
            self.lib.shutdown()
        self.set_status(ProbeState.STOPPED, "stopped")
