"""CUDA / NCCL / gloo probe: what any engine does with the GPU, from uprobes on the libraries it maps (no change to
the engine): kernel and graph launches, host syncs and the host steps they close, copies, allocations, collectives
and the TP straggler across ranks.

Uprobes are attached per watched process as its libraries appear in /proc/PID/maps (attach.py) and detached when it
exits. Kernel launches are counted per thread in the kernel; every other call is aggregated there per function,
direction, duration bucket and communicator, read and cleared each poll. Per-call records go through one ring
buffer: one per host sync (a host step), collective, communicator init and failed allocation, and one per launch
only while launch tracing is on (`trace_launches`: an incident window, or `agent probes cuda --launches`).

The snapshot (`store.snapshot("cuda")`) is a cuda/snapshot.py CudaSnapshot.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from gpusleuth.probes.base import PollResult, ProbeState, ProbeUnavailable, Requirement
from gpusleuth.probes.bpf import host as bpf_host
from gpusleuth.probes.bpf import uprobe_multi
from gpusleuth.probes.bpf.probe import BccProbe
from gpusleuth.probes.cuda import events as ev
from gpusleuth.probes.cuda.attach import Attacher, Linker, MultiLinker, PerfLinker
from gpusleuth.probes.cuda.config import CudaConfig
from gpusleuth.probes.cuda.decode import AllocFailure, CollectiveCall, CommInit, Launch, Record, SyncCall, decode
from gpusleuth.probes.cuda.snapshot import CudaLibrary, CudaProcess, CudaSnapshot
from gpusleuth.probes.cuda.stats import ProcessStats
from gpusleuth.probes.cuda.straggler import TpMatcher
from gpusleuth.probes.cuda.symbols import ALL_FUNCTIONS, Family
from gpusleuth.probes.kernel.proc_info import all_pids, is_alive
from gpusleuth.probes.records import Event, Sample, monotonic_ns

UPROBE_PMU = "/sys/bus/event_source/devices/uprobe"


class CudaProbe(BccProbe):
    name = "cuda"
    config_class = CudaConfig
    C_SOURCE = Path(__file__).with_name("cuda.c")
    TRACEPOINTS: list[tuple[str, str]] = []
    EVENT_TABLE = "events"
    EVENT_PAGES = 256  # 1 MiB: ~10,000 records between polls (launch tracing fills it fastest)

    def __init__(self, config: CudaConfig) -> None:
        super().__init__(config)
        self._attacher: Attacher | None = None
        self._stats: dict[int, ProcessStats] = {}
        self._matcher = TpMatcher()
        self._tracing_until = 0
        self._stragglers = 0
        self._is_multi = uprobe_multi.is_supported() and config.uprobe_path != "perf"

    @classmethod
    def requirements(cls) -> list[Requirement]:
        return bpf_host.bpf_requirements([]) + [
            Requirement("uprobes", os.path.isdir(UPROBE_PMU), UPROBE_PMU,
                        "a kernel built with CONFIG_UPROBE_EVENTS (uprobes)")]

    def _functions(self) -> list[int]:
        """Ids of the functions this configuration attaches to."""
        return [i for i, f in enumerate(ALL_FUNCTIONS) if f.lib in self.config.libraries
                and not (f.family is Family.LAUNCH and self.config.launches == "off")]

    def defines(self) -> dict[str, int | str]:
        ids = self._functions()
        families = sorted({int(ALL_FUNCTIONS[i].family) for i in ids if ALL_FUNCTIONS[i].family.has_return})
        fn_list = "" if self._is_multi else " ".join([f"X({i})" for i in ids] + [f"R({f})" for f in families])
        return {"USE_MULTI": int(self._is_multi), "NUM_FNS": len(ALL_FUNCTIONS), "FN_LIST": fn_list,
                "MAX_THREADS": self.config.max_threads, "MAX_KEYS": self.config.max_keys,
                "MAX_ALLOCS": self.config.max_allocs}

    def describe_path(self) -> str:
        return ("uprobe_multi links" if self._is_multi else "perf event uprobes") + " per process"

    def make_event(self, raw: Any) -> Record | None:  # type: ignore[override]
        """The typed record (decode.py) of one ring buffer entry; poll() turns records into store Events."""
        return decode(raw)

    def start(self) -> None:
        self._is_multi = self._choose_path()
        super().start()
        bcc = bpf_host.import_bcc()
        fns = self._bpf["fn_table"]
        for i, f in enumerate(ALL_FUNCTIONS):
            fns[ctypes.c_int(i)] = fns.Leaf(int(f.family), f.size, f.out, f.handle, f.aux, f.aux2,
                                            int(f.direction), int(f.layout))
        skip = {i for i, f in enumerate(ALL_FUNCTIONS) if i not in set(self._functions())}
        if self._is_multi:
            load = lambda name: self._bpf.load_func(name, bcc.BPF.KPROBE,  # noqa: E731
                                                    attach_type=uprobe_multi.BPF_TRACE_UPROBE_MULTI).fd
            linker: Linker = MultiLinker(load(b"e_any"), load(b"r_any"))
        else:
            linker = PerfLinker(self._bpf, self.config.max_uprobes)
        self._attacher = Attacher(linker, list(self.config.libraries), skip, self.config.max_uprobes,
                                  self.config.rescan_interval_s)

    HAS_LIFECYCLE = False  # uprobes are attached per process: no watched map to inherit

    def push_watch(self) -> None:
        """Nothing to push: uprobes are attached per process in poll()."""

    def _choose_path(self) -> bool:
        """True for uprobe_multi links (cheap to attach and detach), False for a perf event per uprobe."""
        supported = uprobe_multi.is_supported()
        if self.config.uprobe_path == "multi" and not supported:
            raise ProbeUnavailable("probes.cuda.uprobe_path = \"multi\" but this kernel has no uprobe_multi links "
                                   "(Linux 6.6+ with BTF); set it to \"auto\" or \"perf\"")
        return supported and self.config.uprobe_path != "perf"

    def trace_launches(self, seconds: float) -> int:
        """Per-launch events for the next `seconds` (0 stops them); returns the deadline (monotonic ns)."""
        until = monotonic_ns() + int(seconds * 1e9) if seconds > 0 else 0
        with self._lock:
            if self._bpf is not None:
                self._bpf["ctl"][ctypes.c_int(0)] = ctypes.c_uint64(until)
        self._tracing_until = until
        return until

    def poll(self, now_ns: int) -> PollResult:
        with self._lock:
            if self._attacher is not None:
                tgids = frozenset(all_pids()) - {os.getpid()} if self._watch.is_all else self._watch.tgids
                for pid in self._attacher.sync(tgids):
                    self._matcher.drop_pending(pid)
                self._matcher.members = {p for p, a in self._attacher.processes.items()
                                         if {"nccl", "gloo"} & set(a.libraries)}
            threads = list(self._bpf["threads"].items()) if self._bpf is not None else []
        records, drained, lost = self.read_kernel(["agg"])
        for key, val in drained["agg"]:
            st = self._process(key.tgid)
            if ALL_FUNCTIONS[key.fn].family is Family.COLL:
                st.add_collective_aggregate(key.fn, key.handle, key.slot, val, now_ns)
            else:
                st.add_aggregate(key.fn, key.dir, key.slot, val, now_ns)
        self._read_threads(threads)
        events = self._handle(records, now_ns)
        self._matcher.expire(now_ns)
        samples = self._expire(now_ns)
        self._set_status(lost)
        return PollResult(samples=samples, events=events, snapshot=self._snapshot(now_ns, lost))

    def _process(self, pid: int) -> ProcessStats:
        st = self._stats.get(pid)
        if st is None:
            st = self._stats[pid] = ProcessStats(self.config.recent_steps, self.config.gpu_bound_share)
        return st

    def _read_threads(self, threads: list) -> None:
        gone = []
        for key, t in threads:
            tid = getattr(key, "value", key)
            if not is_alive(tid):
                gone.append(key)
                self._process(t.tgid).thread_gone(tid, t.launches, t.graphs)
                continue
            self._process(t.tgid).set_thread_counts(tid, t.launches, t.graphs)
        with self._lock:
            if self._bpf is not None:
                table = self._bpf["threads"]
                for key in gone:
                    table.pop(key, None)

    def _handle(self, records: list, now_ns: int) -> list[Event]:
        out: list[Event] = []
        for r in records:
            if r is None:
                continue
            comm = self._comms.get(r.pid)
            if isinstance(r, SyncCall):
                out.append(ev.sync_event(r, self._process(r.pid).add_sync(r), comm))
            elif isinstance(r, CollectiveCall):
                if r.library == "gloo":
                    self._process(r.pid).add_gloo_call(r, now_ns)
                s = self._matcher.add(r, now_ns)
                if s is not None and s.spread_ns >= self.config.straggler_min_ms * 1e6:
                    self._stragglers += 1
                    out.append(ev.straggler_event(s, self._comms.get(s.pid)))
            elif isinstance(r, CommInit):
                self._matcher.add_init(r)
                out.append(ev.comm_init_event(r, comm))
            elif isinstance(r, AllocFailure):
                out.append(ev.alloc_failure_event(r, comm))
            elif isinstance(r, Launch):
                out.append(ev.launch_event(r, comm))
        for st in self._stats.values():
            st.update_rate(now_ns)
        return out

    def _expire(self, now_ns: int) -> list[Sample]:
        """Forget processes gone for idle_expiry_s; a per-process launch count sample for the live ones."""
        horizon = now_ns - int(self.config.idle_expiry_s * 1e9)
        attached = self._attacher.processes if self._attacher else {}
        for pid in [p for p, s in self._stats.items() if p not in attached and not is_alive(p)
                    and s.last_change_ns < horizon]:
            del self._stats[pid]
            self._matcher.forget(pid)
        return [Sample("cuda.launches", now_ns, float(s.launches), {"pid": str(p), "comm": self._comms.get(p)})
                for p, s in self._stats.items()]

    def _set_status(self, lost: list[int]) -> None:
        a = self._attacher
        n_proc = sum(1 for p in (a.processes.values() if a else []) if p.libraries)
        path = f"{self.describe_path()} ({n_proc} attached, {a.num_uprobes if a else 0} uprobes)"
        if any(lost) or (a and a.refused):
            self.set_status(ProbeState.DEGRADED, f"overloaded: {lost[0]} keys, {lost[1]} events, {lost[2]} thread "
                            f"slots lost, {a.refused if a else 0} uprobes refused; raise probes.cuda.max_keys / "
                            "max_threads / max_uprobes or narrow [watch]", path)
        else:
            self.set_status(ProbeState.OK, "", path)

    def _snapshot(self, now_ns: int, lost: list[int]) -> CudaSnapshot:
        attached = self._attacher.processes if self._attacher else {}
        for pid, a in attached.items():  # attached but nothing called yet: still say what was found
            if a.libraries:
                self._process(pid)
        groups_of = self._matcher.groups_of()
        processes = {}
        for pid, st in self._stats.items():
            libs = attached[pid].libraries if pid in attached else {}
            proc = CudaProcess(comm=self._comms.get(pid), libraries={
                k: CudaLibrary(lib.path, [r.symbol for r in lib.resolved], lib.missing, lib.uprobes, lib.error)
                for k, lib in libs.items()})
            if "driver" in libs:
                proc.api = "driver+runtime" if "runtime" in libs else "driver only (runtime static or absent)"
            processes[pid] = st.snapshot(proc, pid, groups_of, {tid: self._comms.get(tid) for tid in st.threads})
        a = self._attacher
        until = self._tracing_until if self._tracing_until > now_ns else 0
        return CudaSnapshot(now_ns, self.config.interval_s, processes, dict(self._matcher.groups),
                            a.num_uprobes if a else 0, a.refused if a else 0, until, self._stragglers, *lost)

    def stop(self) -> None:
        with self._lock:
            if self._attacher is not None:
                self._attacher.detach_all()
                self._attacher = None
        super().stop()
