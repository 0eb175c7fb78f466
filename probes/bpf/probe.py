"""What the bcc tracepoint probes share: compiling C with #define flags, the watch map, one event buffer drained
into Events with a per-poll bound, read-and-clear of kernel maps, and detaching."""
from __future__ import annotations

import threading
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from gpusleuth.probes.bpf import compiler as bpf_compiler
from gpusleuth.probes.bpf import host as bpf_host
from gpusleuth.probes.bpf import maps as bpf_maps
from gpusleuth.probes.base import Probe, ProbeState, ProbeUnavailable, Requirement, WatchSet
from gpusleuth.probes.kernel.proc_info import CommCache
from gpusleuth.probes.records import Event


class BccProbe(Probe):
    """Subclasses name their C file, tracepoints and event buffer, and turn one raw event into an Event."""

    C_SOURCE: ClassVar[Path]
    TRACEPOINTS: ClassVar[list[tuple[str, str]]]
    EVENT_TABLE: ClassVar[str]
    EVENT_PAGES: ClassVar[int] = 16

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._bpf = None
        self._events: Any = None  # the event buffer table
        self._lock = threading.Lock()
        self._watch = WatchSet()
        self._comms = CommCache()
        self._pending: list[Event] = []
        self._dropped_user = 0
        self._use_ringbuf = True

    @classmethod
    def requirements(cls) -> list[Requirement]:
        return bpf_host.bpf_requirements(cls.TRACEPOINTS)

    @abstractmethod
    def defines(self) -> dict[str, int]:
        """The probe's own #define flags (FILTER and USE_RINGBUF are added here)."""

    @abstractmethod
    def make_event(self, raw: Any) -> Event:
        """One Event from one record of the event buffer."""

    def source(self) -> str:
        """The generated C text (for `agent probes --ebpf NAME`)."""
        return bpf_compiler.render_source(self.C_SOURCE, {
            "FILTER": 0 if self._watch.is_all else 1, "USE_RINGBUF": int(self._use_ringbuf), **self.defines()})

    def compile(self) -> None:
        self._bpf = bpf_compiler.compile_bpf(self.source())

    def describe_path(self) -> str:
        return ", ".join(f"{c}:{e}" for c, e in self.TRACEPOINTS[:1]) + " tracepoints"

    def start(self) -> None:
        bpf_host.check_requirements(self.requirements())
        bcc = bpf_host.import_bcc()
        self._use_ringbuf = bool(getattr(bcc.BPF, "support_ringbuf", lambda: True)())
        self.compile()
        table = self._events = self._bpf[self.EVENT_TABLE]
        if self._use_ringbuf:
            table.open_ring_buffer(self._on_raw_event)
        else:
            table.open_perf_buffer(self._on_raw_event, page_cnt=self.EVENT_PAGES)
        self.push_watch()
        buffer = "ring buffer" if self._use_ringbuf else "perf buffer"
        self.set_status(ProbeState.OK, path=f"{self.describe_path()}, {buffer}")

    def _on_raw_event(self, *args) -> int:
        # ring buffer callbacks get (ctx, data, size); perf buffer callbacks get (cpu, data, size)
        if len(self._pending) >= self.config.max_events_per_poll:
            self._dropped_user += 1
            return -1  # stop draining this poll: the rest waits in the buffer, or the kernel drops and counts it
        # bcc builds the record's ctypes type from the C struct the program submits: no mirror to keep in step.
        self._pending.append(self.make_event(self._events.event(args[1])))
        return 0

    def update_watch(self, watch: WatchSet) -> None:
        with self._lock:
            self._watch = watch
            if self._bpf is not None:
                self.push_watch()

    def push_watch(self) -> None:
        """Make the kernel's `watched` map match the watch set (subclasses add more)."""
        bpf_maps.set_members(self._bpf["watched"], self._watch.tgids)

    def read_kernel(self, tables: list[str]) -> tuple[list[Event], dict[str, list], list[int]]:
        """Events since the last poll, the read-and-cleared `tables`, and [lost keys, lost events] so far."""
        with self._lock:
            if self._bpf is None:
                raise ProbeUnavailable("not started")
            if self._use_ringbuf:
                self._bpf.ring_buffer_poll(timeout=0)
            else:
                self._bpf.perf_buffer_poll(timeout=0)
            drained = {name: bpf_maps.drain(self._bpf[name]) for name in tables}
            lost = [v.value for _, v in self._bpf["lost"].items()]
        events, self._pending = self._pending, []
        lost[1] += self._dropped_user
        return events, drained, lost

    @property
    def filter_name(self) -> str:
        return "all" if self._watch.is_all else "watched"

    def stop(self) -> None:
        with self._lock:
            if self._bpf is not None:
                self._bpf.cleanup()
                self._bpf = None
        self.set_status(ProbeState.STOPPED, "stopped")
