"""The replay source: a recording read back by the agent's replay reader, shown at a movable time cursor.

The reader (gpusleuth.agent.recording.Replay, handed in by `agent tui --recording`) rebuilds what a live agent would
answer at an instant; this source only moves the cursor and puts each instant's answers into a Frame.
"""
from __future__ import annotations

from typing import Any, Protocol

from gpusleuth.tui.source import HISTORY_S, WINDOW_S, DataSource, Frame, Want

MAX_EVENTS = 2000


class ReplayReader(Protocol):
    """What the replay source needs from a recording reader (gpusleuth.agent.recording.replay.Replay)."""

    label: str
    notes: dict[str, str]
    start_ns: int
    end_ns: int
    wall_offset_ns: int

    def event_dicts(self, lo: int, hi: int, limit: int) -> list[dict[str, Any]]: ...

    def snapshots(self, lo: int, c: int, bursts: list[dict[str, Any]]) -> dict[str, Any]: ...

    def series(self, lo: int, hi: int) -> dict[str, list[tuple[int, float]]]: ...

    def windows(self, lo: int, hi: int) -> dict[str, list[dict[str, Any]]]: ...

    def requests(self, events: list[dict[str, Any]], c: int) -> list[dict[str, Any]]: ...

    def status(self) -> dict[str, Any]: ...

    def explain(self, request: dict[str, Any], limit: int) -> dict[str, Any]: ...


class RecordingSource(DataSource):
    has_cursor = True

    def __init__(self, replay: ReplayReader) -> None:
        self.replay = replay
        self.label = replay.label
        self.start_ns, self.end_ns = replay.start_ns, replay.end_ns
        self.wall_offset_ns = replay.wall_offset_ns
        self.cursor_ns = self.end_ns  # open at the end: the incident is usually what was recorded last
        self._cache: tuple[tuple, Frame] | None = None

    # --- cursor ------------------------------------------------------------------------------------------------
    def seek(self, delta_s: float) -> None:
        self.cursor_ns = min(self.end_ns, max(self.start_ns, self.cursor_ns + int(delta_s * 1e9)))

    def seek_edge(self, to_end: bool) -> None:
        self.cursor_ns = self.end_ns if to_end else self.start_ns

    def cursor_info(self) -> dict[str, Any]:
        return {"cursor_ns": self.cursor_ns, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "wall_offset_ns": self.wall_offset_ns}

    # --- frames ------------------------------------------------------------------------------------------------
    def fetch(self, want: Want) -> Frame:
        key = (self.cursor_ns, want)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        c = self.cursor_ns
        lo = c - int(HISTORY_S * 1e9)
        r = self.replay
        frame = Frame(t_ns=c, wall_offset_ns=self.wall_offset_ns, notes=dict(r.notes))
        history = r.event_dicts(lo, c, MAX_EVENTS)
        frame.snapshots = r.snapshots(lo, c, [e for e in history if e["kind"] == "net.microburst"])
        frame.series = r.series(lo, c)
        frame.windows = r.windows(c - int(WINDOW_S * 1e9), c)
        frame.notes["window.buckets"] = "a recording keeps counts and sums only: averages, no percentiles"
        frame.events = [e for e in history if e["source"] != "spans"] if want.is_events else []  # as live
        frame.requests = r.requests(history, c)
        if not frame.requests and not any(e["source"] == "spans" for e in history):
            frame.notes["requests"] = "no engine spans in the recording near the cursor"
        frame.status = r.status()
        self._cache = (key, frame)
        return frame

    def request_detail(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("start_ns") is None or request.get("end_ns") is None:
            return {"request": request, "phases": [], "overlapping": [], "verdicts": [],
                    "notes": {"phases": "the request has no time window"}}
        detail = self.replay.explain(request, MAX_EVENTS)
        detail["notes"] = {}
        return detail
