"""What the bcc tracepoint probes share: compiling C with #define flags, optional parts compiled out where their
tracepoint is missing, the watch map, event buffers drained into Events with one per-poll bound, read-and-clear of
kernel maps, and detaching."""
from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

from gpusleuth.probes.bpf import compiler as bpf_compiler
from gpusleuth.probes.bpf import host as bpf_host
from gpusleuth.probes.bpf import maps as bpf_maps
from gpusleuth.probes.bpf.lifecycle import Lifecycle, ProcChange
from gpusleuth.probes.base import Probe, ProbeState, ProbeUnavailable, Requirement, WatchSet
from gpusleuth.probes.kernel.proc_info import CommCache
from gpusleuth.probes.records import Event, monotonic_ns

DRAIN_SHARE = 0.2  # a poll spends at most this share of its interval taking events from the buffers
LOSS_WINDOW_S = 60.0  # lost records keep the probe degraded this long
BEHIND_S = 5.0  # events delivered later than this (and the buffers not drained) make the probe degraded


class BccProbe(Probe):
    """Subclasses name their C file, tracepoints and event buffer, and turn one raw event into an Event."""

    C_SOURCE: ClassVar[Path]
    TRACEPOINTS: ClassVar[list[tuple[str, str]]]
    EVENT_TABLE: ClassVar[str]
    EVENT_PAGES: ClassVar[int] = 16
    # More event buffers: table -> name of the method that makes an Event of one of its records.
    EXTRA_EVENT_TABLES: ClassVar[dict[str, str]] = {}
    # Optional parts: #define flag -> (tracepoints the part needs, what goes missing without it). A part whose
    # tracepoint this kernel lacks is compiled out (flag 0) and the probe runs degraded, naming it.
    OPTIONAL_PARTS: ClassVar[dict[str, tuple[tuple[tuple[str, str], ...], str]]] = {}
    # The C text includes lifecycle.h (children inherit the watch at fork; exec / exit named): its map is drained.
    HAS_LIFECYCLE: ClassVar[bool] = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._bpf = None
        self._events: Any = None  # the event buffer table
        self._lock = threading.Lock()
        self._watch = WatchSet()
        self._comms = CommCache()
        self.lifecycle = Lifecycle(self._comms)
        self._changes: list[ProcChange] = []  # drained from the kernel since the last poll
        self._pending: list[Event] = []
        self._num_read = 0
        self._is_capped = False  # the last drain stopped before the buffer was empty
        self._drain_deadline = 0.0
        self.lateness_s = 0.0
        self.events_delivered = 0
        self._lost_seen: list[int] = []
        self._losses: deque[tuple[int, list[int]]] = deque()  # (poll time, lost deltas) with any loss
        self._use_ringbuf = True
        self._parts: dict[str, str] = {}  # optional part flag -> why it is off ('' = on)

    @classmethod
    def requirements(cls) -> list[Requirement]:
        reqs = bpf_host.bpf_requirements(cls.TRACEPOINTS)
        for tracepoints, what in cls.OPTIONAL_PARTS.values():
            reqs += [Requirement(f"tracepoint {c}:{e}", bpf_host.tracepoint_exists(c, e), f"optional: {what}",
                                 "a kernel with this tracepoint; the probe runs without the part meanwhile",
                                 is_optional=True) for c, e in tracepoints]
        return reqs

    def part_off_reason(self, flag: str) -> str:
        """Why optional part `flag` cannot run here ('' if it can); subclasses add config switches or other checks."""
        tracepoints, what = self.OPTIONAL_PARTS[flag]
        missing = [f"{c}:{e}" for c, e in tracepoints if not bpf_host.tracepoint_exists(c, e)]
        return f"no tracepoint {', '.join(missing)}: {what} off" if missing else ""

    def parts_off(self) -> list[str]:
        """Why each optional part that is off is off (config switches excluded: those are not a degradation)."""
        return [reason for reason in self._parts.values() if reason and not reason.startswith("disabled")]

    @abstractmethod
    def defines(self) -> dict[str, int]:
        """The probe's own #define flags (FILTER and USE_RINGBUF are added here)."""

    @abstractmethod
    def make_event(self, raw: Any) -> Event:
        """One Event from one record of the event buffer."""

    def source(self) -> str:
        """The generated C text (for `agent probes --ebpf NAME`)."""
        if not self._parts:
            self._parts = {flag: self.part_off_reason(flag) for flag in self.OPTIONAL_PARTS}
        parts = {flag: int(not reason) for flag, reason in self._parts.items()}
        return bpf_compiler.render_source(self.C_SOURCE, {
            "FILTER": 0 if self._watch.is_all else 1, "USE_RINGBUF": int(self._use_ringbuf),
            "INHERIT_WATCH": int(self._watch.is_inherited), **parts, **self.defines()})

    def compile(self) -> None:
        self._bpf = bpf_compiler.compile_bpf(self.source())

    def describe_path(self) -> str:
        return ", ".join(f"{c}:{e}" for c, e in self.TRACEPOINTS[:1]) + " tracepoints"

    def start(self) -> None:
        bpf_host.check_requirements(self.requirements())
        bcc = bpf_host.import_bcc()
        self._use_ringbuf = bool(getattr(bcc.BPF, "support_ringbuf", lambda: True)())
        self._parts = {}  # checked again at each start
        self.compile()
        tables = {self.EVENT_TABLE: self.make_event,
                  **{name: getattr(self, method) for name, method in self.EXTRA_EVENT_TABLES.items()}}
        for name, make in tables.items():
            callback = self._event_callback(self._bpf[name], make)
            if self._use_ringbuf:
                self._bpf[name].open_ring_buffer(callback)
            else:
                self._bpf[name].open_perf_buffer(callback, page_cnt=self.EVENT_PAGES)
        self._events = self._bpf[self.EVENT_TABLE]
        self.push_watch()
        buffer = "ring buffer" if self._use_ringbuf else "perf buffer"
        off = self.parts_off()
        self.set_status(ProbeState.DEGRADED if off else ProbeState.OK, "; ".join(off),
                        path=f"{self.describe_path()}, {buffer}")

    def _event_callback(self, table: Any, make: Any) -> Any:
        def on_raw_event(*args) -> int:
            # ring buffer callbacks get (ctx, data, size); perf buffer callbacks get (cpu, data, size).
            # bcc builds the record's ctypes type from the C struct the program submits: no mirror to keep in step.
            event = make(table.event(args[1]))
            if event is not None:  # a maker may decline a record
                self._pending.append(event)
            # The record in hand is kept either way (the ring buffer has already let it go). Stop when this poll's
            # time is spent or its memory bound is reached: the rest waits in the buffer for the next poll.
            self._num_read += 1
            if len(self._pending) >= self.config.max_events_per_poll or (
                    self._num_read % 64 == 0 and time.monotonic() > self._drain_deadline):
                self._is_capped = True
                return -1
            return 0
        return on_raw_event
    def update_watch(self, watch: WatchSet) -> None:
        with self._lock:
            self._watch = watch
            if self._bpf is not None:
                self.push_watch()

    def push_watch(self) -> None:
        """Make the kernel's `watched` map match the watch set and the children it gave its watch to since
        (subclasses add more). Children that forked since the last poll are drained first, so none is lost."""
        self._drain_lifecycle()
        bpf_maps.set_members(self._bpf["watched"], self._watch.tgids | self.lifecycle.live_children())

    def _drain_lifecycle(self) -> None:
        if self.HAS_LIFECYCLE:
            self._changes += self.lifecycle.drain(self._bpf["proc_events"])

    def take_changes(self) -> list[ProcChange]:
        """The forks / execs / exits of watched processes drained since the last call."""
        changes, self._changes = self._changes, []
        return changes

    def read_kernel(self, tables: list[str]) -> tuple[list[Event], dict[str, list], list[int]]:
        """Events since the last poll, the read-and-cleared `tables`, and [lost keys, lost events] so far
        (forks / execs / exits are drained too: take_changes())."""
        with self._lock:
            if self._bpf is None:
                raise ProbeUnavailable("not started")
            self._num_read, self._is_capped = 0, False
            self._drain_deadline = time.monotonic() + DRAIN_SHARE * self.config.interval_s
            if self._use_ringbuf:
                self._bpf.ring_buffer_poll(timeout=0)
            else:
                self._bpf.perf_buffer_poll(timeout=0)
            drained = {name: bpf_maps.drain(self._bpf[name]) for name in tables}
            self._drain_lifecycle()
            lost = [v.value for _, v in self._bpf["lost"].items()]
        events, self._pending = self._pending, []
        self._note_lateness(events)
        return events, drained, lost

    def _note_lateness(self, events: list[Event]) -> None:
        """How late this poll delivered its events (poll time - event end): the worst, for status and metrics."""
        self.events_delivered += len(events)
        ends = [e.end_ns for e in events if isinstance(e, Event)]  # a probe may queue records of its own kind
        self.lateness_s = max(0.0, (monotonic_ns() - min(ends)) / 1e9) if ends else 0.0

    def update_health(self, lost: list[int], now_ns: int, hint: str) -> None:
        """ok, or degraded while a part is off or records were lost within the last LOSS_WINDOW_S (cumulative
        counters would keep a probe degraded for life after one storm). `lost`: the kernel's cumulative counters."""
        delta = [new - old for new, old in zip(lost, self._lost_seen)] if self._lost_seen else list(lost)
        self._lost_seen = list(lost)
        if any(delta):
            self._losses.append((now_ns, delta))
        horizon = now_ns - int(LOSS_WINDOW_S * 1e9)
        while self._losses and self._losses[0][0] < horizon:
            self._losses.popleft()
        reasons = self.parts_off()
        if self._losses:
            recent = [sum(d[i] for _, d in self._losses) for i in range(len(lost))]
            reasons.append(f"overloaded: {recent[0]} keys and {recent[1]} events lost in the last "
                           f"{LOSS_WINDOW_S:g} s; {hint}")
        if self._is_capped and self.lateness_s > max(BEHIND_S, 5 * self.config.interval_s):
            reasons.append(f"behind: events arrive up to {self.lateness_s:.1f} s late")  # one capped drain is not
        details = {"lateness_s": round(self.lateness_s, 3), "events_delivered": self.events_delivered}
        self.set_status(ProbeState.DEGRADED if reasons else ProbeState.OK, "; ".join(reasons), **details)

    @property
    def filter_name(self) -> str:
        return "all" if self._watch.is_all else "watched"

    def stop(self) -> None:
        with self._lock:
            if self._bpf is not None:
                self._bpf.cleanup()
                self._bpf = None
        self.set_status(ProbeState.STOPPED, "stopped")
