"""Where the TUI's data comes from: one `Frame` per refresh, from a live agent, a recording or fixed test data.

Screens only ever read Frames, so the same screens serve the live socket (source_live.LiveSource), a recording on
disk (source_recording.RecordingSource) and snapshot tests (FixedSource). A source is called from one worker
thread at a time (the app never overlaps fetches) plus, for request details, from a second worker; sources that
share a connection guard it themselves.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

ALL_SOURCES = ("agent", "syscalls", "sched", "net", "gpu", "spans")
WINDOW_S = 10.0  # windowed latency tables cover this many seconds
HISTORY_S = 300.0  # sparklines cover this many seconds


class SourceError(Exception):
    """The source cannot give data right now (agent gone, file unreadable); the message says why."""


@dataclass(slots=True, frozen=True)
class Want:
    """What the visible screen needs, so a refresh fetches no more than that."""

    sources: frozenset[str] = frozenset(ALL_SOURCES)
    is_events: bool = False
    is_requests: bool = False
    is_incidents: bool = False


@dataclass(slots=True)
class Frame:
    """Everything one refresh shows. Times are CLOCK_MONOTONIC ns; add wall_offset_ns for wall-clock time.

    snapshots: source -> its snapshot object, the type its probe defines (probes/<room>/snapshot.py, e.g.
               "gpu" -> GpuSnapshot), decoded by probes/snapshot_codec.py; a recording rebuilds "gpu" and "net".
    series: sparkline histories, key -> [(t_ns, value)], e.g. "gpu.0.util_gpu_pct", "net.eth0.egress_bps".
    windows: {"syscalls": [row], "runq": [row]} over the last `window_s`, each row {"pid", "comm", ("syscall"),
             "count", "sum_ns", "buckets": {slot: n} | None}; None buckets mean only averages are known.
    events: recent events (dicts as the control socket gives them plus a "seq"), oldest first.
    requests: recent requests (control socket `requests`), or None when the source cannot give them.
    requests_since_ns: the list holds every request that finished since then (None: unknown); rates use it.
    incidents: the diagnosis's incidents of the last HISTORY_S (control socket `incidents`, oldest first), or None
               when the source cannot give them (notes["incidents"] says why).
    notes: why something is missing, keyed by what is missing ("requests", "events", "gpu", ...).
    is_partial: part of it is still being computed: the app fetches again soon, even while paused.
    """

    t_ns: int = 0
    wall_offset_ns: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    snapshots: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    windows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    window_s: float = WINDOW_S
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] | None = None
    requests_since_ns: int | None = None
    incidents: list[dict[str, Any]] | None = None
    notes: dict[str, str] = field(default_factory=dict)
    error: str = ""
    is_partial: bool = False


class DataSource(ABC):
    """A provider of Frames. `label` names it in the title bar; replay sources also move a time cursor."""

    label: str = ""
    is_live: bool = False
    has_cursor: bool = False

    @abstractmethod
    def fetch(self, want: Want) -> Frame:
        """The current Frame; raises SourceError when there is nothing to show at all."""

    @abstractmethod
    def request_detail(self, request: dict[str, Any]) -> dict[str, Any]:
        """Shaped like the agent's `explain`: {request, phases, overlapping, verdicts}; notes["..."] if partial."""

    def close(self) -> None:
        """Release connections or files."""

    def abort(self) -> None:
        """Wake a fetch blocked in another thread (called on quit from the main thread); never blocks."""

    # Time cursor (replay only). Live sources ignore these.
    def seek(self, delta_s: float) -> None:
        """Move the cursor by delta_s seconds (clamped to the recording)."""

    def seek_edge(self, to_end: bool) -> None:
        """Jump to the first or last instant."""

    def cursor_info(self) -> dict[str, Any]:
        """{"cursor_ns", "start_ns", "end_ns", "wall_offset_ns"} for the cursor bar; {} without a cursor."""
        return {}


class FixedSource(DataSource):
    """Returns the same Frame and details every time: snapshot tests and layout work without an agent."""

    def __init__(self, frame: Frame, details: dict[str, dict[str, Any]] | None = None,
                 label: str = "fixed data", cursor: dict[str, Any] | None = None) -> None:
        self.frame = frame
        self.details = details or {}
        self.label = label
        self.has_cursor = cursor is not None
        self._cursor = dict(cursor or {})
        self.fetches = 0

    def fetch(self, want: Want) -> Frame:
        self.fetches += 1
        return copy.copy(self.frame)

    def request_detail(self, request: dict[str, Any]) -> dict[str, Any]:
        rid = request.get("request_id", "")
        if rid in self.details:
            return self.details[rid]
        return {"request": request, "phases": [], "overlapping": [], "verdicts": [],
                "notes": {"phases": "no detail recorded for this request"}}

    def seek(self, delta_s: float) -> None:
        if self._cursor:
            c = self._cursor
            c["cursor_ns"] = min(c["end_ns"], max(c["start_ns"], c["cursor_ns"] + int(delta_s * 1e9)))

    def seek_edge(self, to_end: bool) -> None:
        if self._cursor:
            self._cursor["cursor_ns"] = self._cursor["end_ns" if to_end else "start_ns"]

    def cursor_info(self) -> dict[str, Any]:
        return dict(self._cursor)
