"""One GPU: its identity, and what one poll reads from it through the NVML wrapper.

Per poll: utilisation, SM/memory clocks, power, GPU temperature, clock-event reasons, framebuffer, P-state, one
batched nvmlDeviceGetFieldValues (memory temperature, energy, PCIe replays and byte counters, ECC, row remapping,
NVLink throughput) and GPM. On the detail interval: encoder/decoder utilisation, processes, NVML sample buffers.
Units on the way in: mW -> W, bytes -> MiB (floor, like nvidia-smi), counters -> per-second rates.
A call that answers GPU_IS_LOST raises GpuLost out of `read`; the probe marks this GPU lost.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpusleuth.probes.gpu import mig as gpu_mig
from gpusleuth.probes.gpu.fields import FIELDS, decode_reasons, field_value
from gpusleuth.probes.gpu.gpm import GpmSampler, is_gpm_supported
from gpusleuth.probes.gpu.process import ProcessSampler
from gpusleuth.probes.gpu.rates import CounterRate
from gpusleuth.probes.gpu.snapshot import GpmMetrics, GpuState
from gpusleuth.probes.gpu.samples import SampleReader, wall_us_to_mono_ns
from gpusleuth.probes.gpu.throttle import ThrottleTracker
from gpusleuth.probes.gpu.nvml import NA, Nvml, as_text, or_none
from gpusleuth.probes.records import Event, Sample, monotonic_ns

MIB = 1048576
PSTATE_UNKNOWN = 32
FIELD_GONE = (2, 3, 13)  # INVALID_ARGUMENT (unknown id), NOT_SUPPORTED, FUNCTION_NOT_FOUND: never ask again
# Series written to the store every poll (the rest is only in the snapshot, to keep the store small).
CORE_SERIES = ("util_gpu_pct", "util_mem_pct", "sm_clock_mhz", "power_w", "gpu_temp_c", "fb_used_mib",
               "clock_event_reasons", "pcie_tx_bytes_s", "pcie_rx_bytes_s", "nvlink_tx_bytes_s", "nvlink_rx_bytes_s")
CORE_GPM = ("sm_active", "tensor_active", "dram_active")


@dataclass(slots=True)
class DeviceOptions:
    is_gpm_enabled: bool = True
    is_process_enabled: bool = True
    is_samples_enabled: bool = True
    proc_root: Path = Path("/proc")
    process_stale_s: float = 3.0


class GpuDevice:
    """Identity and per-poll reading of one physical GPU (its MIG instances included)."""

    def __init__(self, lib: Nvml, index: int, handle: Any, opts: DeviceOptions) -> None:
        self.lib, self.index, self.handle, self.opts = lib, index, handle, opts
        q = lib.query
        self.uuid = as_text(q("nvmlDeviceGetUUID", handle)) or f"GPU-unknown-{index}"
        self.name = as_text(q("nvmlDeviceGetName", handle))
        pci = q("nvmlDeviceGetPciInfo", handle)
        self.pci_bus_id = as_text(pci.busId) if pci is not NA else ""
        minor = q("nvmlDeviceGetMinorNumber", handle)
        self.device = f"nvidia{minor}" if minor is not NA else ""
        self.labels = {"gpu": str(index)}
        self.is_lost, self.lost_reason = False, ""
        self._mem_version = lib.const("nvmlMemory_v2")
        self._fields = list(FIELDS.items())
        self._rates = {"pcie_tx": CounterRate(), "pcie_rx": CounterRate(), "nvlink_tx": CounterRate(1024.0),
                       "nvlink_rx": CounterRate(1024.0), "energy": CounterRate(1e-3)}  # KiB->B, mJ/s->W
        self.throttle = ThrottleTracker(index, self.uuid)
        self.is_mig = gpu_mig.is_mig_enabled(lib, handle, index)
        self.instances: list[gpu_mig.MigInstance] = []
        self.gpm: GpmSampler | None = None
        self.procs = ProcessSampler(lib, handle, index, opts.proc_root, opts.process_stale_s,
                                    is_util_enabled=not self.is_mig) if opts.is_process_enabled else None
        self.samples = SampleReader(lib, handle, index, self.labels) \
            if opts.is_samples_enabled and not self.is_mig else None
        self.is_gpm_supported = opts.is_gpm_enabled and is_gpm_supported(lib, handle, index)
        if self.is_mig:
            self.refresh_mig()
        elif self.is_gpm_supported:
            self.gpm = GpmSampler(lib, handle, index)
            if not self.gpm.start():
                self.gpm, self.is_gpm_supported = None, False
        self.pcie_path = "none"  # counters | gpm | nvml_throughput | none (status shows it)
        self._pcie_slow: tuple[Any, Any] = (NA, NA)
        self._has_pcie_counter = False
        self._counters: tuple[dict[str, Any], dict[str, Any]] | None = None  # last field values and GPM read
        self._last_energy: tuple[Any, Any] = (NA, NA)  # energy_mj and power_avg_w between energy reads
        self.last: dict[str, Any] = {}
        self.detail: dict[str, Any] = {"processes": [], "enc_util_pct": None, "dec_util_pct": None,
                                       "power_limit_w": None}

    def refresh_mig(self) -> None:
        """(Re-)enumerate MIG instances, keeping the GPM samplers of instances that still exist."""
        old = {inst.gi_id: inst for inst in self.instances}
        self.instances = gpu_mig.enumerate_instances(self.lib, self.handle, self.index)
        for inst in self.instances:
            kept = old.pop(inst.gi_id, None)
            if kept is not None and kept.gpm is not None:
                inst.gpm = kept.gpm
            elif self.is_gpm_supported:
                inst.gpm = GpmSampler(self.lib, self.handle, (self.index, inst.gi_id), gi_id=inst.gi_id)
                if not inst.gpm.start():
                    inst.gpm = None
        for gone in old.values():
            if gone.gpm is not None:
                gone.gpm.close()

    def read(self, now_ns: int, wall_offset_ns: int, is_detail: bool,
             is_counters: bool = True, is_energy: bool = True) -> tuple[list[Sample], list[Event]]:
        """Read one poll into `self.last`; returns Samples for the store and ended throttle intervals. Field
        values and GPM are read only when `is_counters`, the energy counter only when also `is_energy` (their
        last values are carried between)."""
        v = self._read_basic()
        if is_counters or self._counters is None:
            self._counters = (self._read_fields(now_ns, wall_offset_ns, is_energy or self._counters is None),
                              self.gpm.read() if self.gpm is not None else {})
        fields, gpm = self._counters
        v.update(fields)
        for name in ("pcie_tx_bytes_s", "pcie_rx_bytes_s", "nvlink_tx_bytes_s", "nvlink_rx_bytes_s"):
            if v.get(name, NA) is NA and not (name.startswith("pcie") and self._has_pcie_counter):
                v[name] = gpm.get(name, NA)  # counters first; GPM's own rate where the counter is not there
        if self._has_pcie_counter:
            self.pcie_path = "counters"  # (its rate needs a second read; NA until then)
        elif v["pcie_tx_bytes_s"] is not NA:
            self.pcie_path = "gpm"
        else:
            self._pcie_fallback(v, is_detail)
        v["gpm"] = {k: val for k, val in gpm.items() if not k.endswith("_bytes_s")}
        samples: list[Sample] = []
        if is_detail:
            samples += self._read_detail(wall_offset_ns)
        if self.is_mig:
            v["mig_instances"] = [gpu_mig.read_instance(self.lib, inst, self._mem_version) for inst in self.instances]
        events = self.throttle.update(or_none(v["clock_event_reasons"]), now_ns)
        self.last = v
        samples += [Sample(f"gpu.{k}", now_ns, float(v[k]), self.labels) for k in CORE_SERIES
                    if v.get(k, NA) is not NA]
        samples += [Sample(f"gpu.{k}", now_ns, float(v["gpm"][k]), self.labels) for k in CORE_GPM
                    if v["gpm"].get(k, NA) is not NA]
        return samples, events

    def _pcie_fallback(self, v: dict[str, Any], is_detail: bool) -> None:
        """Last resort for PCIe rates: nvmlDeviceGetPcieThroughput samples for 20 ms inside each call, so it runs
        only on the detail interval and its value is reused until the next one."""
        if is_detail:
            q, key = self.lib.query, (self.index, "pcie_tp")
            tx = q("nvmlDeviceGetPcieThroughput", self.handle, self.lib.const("NVML_PCIE_UTIL_TX_BYTES", 0), key=key)
            rx = q("nvmlDeviceGetPcieThroughput", self.handle, self.lib.const("NVML_PCIE_UTIL_RX_BYTES", 1), key=key)
            self._pcie_slow = (tx * 1024.0 if tx is not NA else NA, rx * 1024.0 if rx is not NA else NA)  # KB/s
        v["pcie_tx_bytes_s"], v["pcie_rx_bytes_s"] = self._pcie_slow
        self.pcie_path = "nvml_throughput" if self._pcie_slow[0] is not NA else "none"

    def _read_basic(self) -> dict[str, Any]:
        q, h, k, nv = self.lib.query, self.handle, self.index, self.lib
        v: dict[str, Any] = {"util_gpu_pct": NA, "util_mem_pct": NA}
        if not self.is_mig:  # NVML has no device-wide utilisation under MIG: report none rather than a wrong one
            util = q("nvmlDeviceGetUtilizationRates", h, key=(k, "util"))
            if util is not NA:
                v["util_gpu_pct"], v["util_mem_pct"] = util.gpu, util.memory
        v["sm_clock_mhz"] = q("nvmlDeviceGetClockInfo", h, nv.const("NVML_CLOCK_SM", 1), key=(k, "clock_sm"))
        v["mem_clock_mhz"] = q("nvmlDeviceGetClockInfo", h, nv.const("NVML_CLOCK_MEM", 2), key=(k, "clock_mem"))
        mw = q("nvmlDeviceGetPowerUsage", h, key=(k, "power"))
        v["power_w"] = mw / 1000.0 if mw is not NA else NA
        v["gpu_temp_c"] = self._first(("nvmlDeviceGetTemperature", "nvmlDeviceGetTemperatureV"),
                                      nv.const("NVML_TEMPERATURE_GPU", 0))
        reasons = self._first(("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"))
        v["clock_event_reasons"] = reasons
        v["clock_event_reason_names"] = decode_reasons(int(reasons)) if reasons is not NA else NA
        pstate = q("nvmlDeviceGetPerformanceState", h, key=(k, "pstate"))
        v["pstate"] = NA if pstate is NA or pstate == PSTATE_UNKNOWN else int(pstate)
        v.update(self._read_memory())
        return v

    def _first(self, names: tuple[str, ...], *args: Any) -> Any:
        """The first of several equivalent NVML functions that this binding and driver answer."""
        for name in names:
            key = (self.index, name)
            value = self.lib.query(name, self.handle, *args, key=key)
            if value is not NA or not self.lib.is_unsupported(key):
                return value
        return NA

    def _read_memory(self) -> dict[str, Any]:
        q, key = self.lib.query, (self.index, "mem_v2")
        mem = NA
        if self._mem_version and not self.lib.is_unsupported(key):
            mem = q("nvmlDeviceGetMemoryInfo", self.handle, key=key, version=self._mem_version)
        reserved = NA
        if mem is NA and (not self._mem_version or self.lib.is_unsupported(key)):
            mem = q("nvmlDeviceGetMemoryInfo", self.handle, key=(self.index, "mem_v1"))
        elif mem is not NA:
            reserved = mem.reserved // MIB
        if mem is NA:
            return {"fb_total_mib": NA, "fb_used_mib": NA, "fb_free_mib": NA, "fb_reserved_mib": NA}
        # v1 counts reserved memory as used; v2 splits it out (what nvidia-smi and dcgm-exporter show as used)
        return {"fb_total_mib": mem.total // MIB, "fb_used_mib": mem.used // MIB, "fb_free_mib": mem.free // MIB,
                "fb_reserved_mib": reserved}

    def _read_fields(self, now_ns: int, wall_offset_ns: int, is_energy: bool = True) -> dict[str, Any]:
        v: dict[str, Any] = {name: NA for name in FIELDS}
        fields = self._fields if is_energy else [f for f in self._fields if f[0] != "energy_mj"]
        if fields:
            got = self.lib.query("nvmlDeviceGetFieldValues", self.handle, [fid for _, fid in fields],
                                 key=(self.index, "fields"))
            if got is NA and self.lib.is_unsupported((self.index, "fields")):
                self._fields = []
            elif got is not NA:
                gone = set()
                for (name, fid), fv in zip(fields, got):
                    if fv.nvmlReturn in FIELD_GONE:
                        gone.add(name)
                        continue
                    v[name] = field_value(fv)
                    if name in ("pcie_tx_bytes", "pcie_rx_bytes", "nvlink_tx_kib", "nvlink_rx_kib", "energy_mj"):
                        t_ns = wall_us_to_mono_ns(fv.timestamp, wall_offset_ns) if fv.timestamp > 0 else now_ns
                        v[f"_t_{name}"] = t_ns
                self._fields = [f for f in self._fields if f[0] not in gone]
        if is_energy and v["energy_mj"] is NA:
            v["energy_mj"] = self.lib.query("nvmlDeviceGetTotalEnergyConsumption", self.handle,
                                            key=(self.index, "energy"))
        if v["pcie_replay_count"] is NA:
            v["pcie_replay_count"] = self.lib.query("nvmlDeviceGetPcieReplayCounter", self.handle,
                                                    key=(self.index, "replay"))
        rates = [("pcie_tx", "pcie_tx_bytes"), ("pcie_rx", "pcie_rx_bytes"), ("nvlink_tx", "nvlink_tx_kib"),
                 ("nvlink_rx", "nvlink_rx_kib")] + ([("energy", "energy_mj")] if is_energy else [])
        for rate, counter in rates:
            r = self._rates[rate].update(v[counter], v.pop(f"_t_{counter}", now_ns))
            v["power_avg_w" if rate == "energy" else f"{rate}_bytes_s"] = r
        if is_energy:
            self._last_energy = (v["energy_mj"], v["power_avg_w"])
        else:  # carried from the last energy read (a counter and its average: both still true, just older)
            v["energy_mj"], v["power_avg_w"] = self._last_energy
        self._has_pcie_counter = v["pcie_tx_bytes"] is not NA
        for raw in ("pcie_tx_bytes", "pcie_rx_bytes", "nvlink_tx_kib", "nvlink_rx_kib"):
            del v[raw]  # only their rates are reported
        return v

    def _read_detail(self, wall_offset_ns: int) -> list[Sample]:
        q, h, k = self.lib.query, self.handle, self.index
        enc = q("nvmlDeviceGetEncoderUtilization", h, key=(k, "enc"))
        dec = q("nvmlDeviceGetDecoderUtilization", h, key=(k, "dec"))
        self.detail["enc_util_pct"] = enc[0] if enc is not NA else None
        self.detail["dec_util_pct"] = dec[0] if dec is not NA else None
        limit_mw = q("nvmlDeviceGetEnforcedPowerLimit", h, key=(k, "power_limit"))  # changes rarely: detail tier
        self.detail["power_limit_w"] = limit_mw / 1000.0 if limit_mw is not NA else None
        samples: list[Sample] = []
        if self.procs is not None:
            now = monotonic_ns()
            self.detail["processes"] = self.procs.read((wall_offset_ns + now) // 1000)
            for p in self.detail["processes"]:
                labels = {"gpu": str(k), "pid": str(p.pid)}
                if p.used_mib is not None:
                    samples.append(Sample("gpu.process.used_mib", now, float(p.used_mib), labels))
                if p.sm_util_pct is not None:
                    samples.append(Sample("gpu.process.sm_util_pct", now, float(p.sm_util_pct), labels))
        if self.samples is not None:
            samples += self.samples.read(wall_offset_ns)
        if self.is_mig:
            self.refresh_mig()
        return samples

    def state(self, xid_counts: dict[int, int], last_xid: int, event_counts: dict[str, int]) -> GpuState:
        """This GPU's part of the snapshot; a lost GPU keeps only identity and event counts (values would be stale)."""
        ident = (self.index, self.uuid, self.name, self.pci_bus_id, self.device, self.is_lost, self.lost_reason,
                 self.is_mig, xid_counts, last_xid, event_counts)  # GpuState's first fields, in order
        if self.is_lost:
            return GpuState(*ident)
        # Built every poll: NA -> None inline rather than a call per value
        values = {k: None if v is NA else v for k, v in self.last.items()}
        gpm = values.pop("gpm", None) or {}  # read() keeps only GPM's ratios here
        return GpuState(*ident, **values, **self.detail, throttle_since_ns=self.throttle.open_since_ns,
                        gpm=GpmMetrics(**{k: None if v is NA else v for k, v in gpm.items()}))

    def close(self) -> None:
        if self.gpm is not None:
            self.gpm.close()
        for inst in self.instances:
            if inst.gpm is not None:
                inst.gpm.close()

