"""The replay source: a recording read back by the agent's replay reader, shown at a movable time cursor.

The reader (gpusleuth.agent.recording.Replay, handed in by `agent tui --recording`) rebuilds what a live agent would
answer at an instant; this source only moves the cursor and puts each instant's answers into a Frame.
"""
from __future__ import annotations

import threading
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

    def event_dicts(self, lo: int, hi: int, limit: int, is_spans: bool = True) -> list[dict[str, Any]]: ...

    def snapshots(self, lo: int, c: int, bursts: list[dict[str, Any]]) -> dict[str, Any]: ...

    def series(self, lo: int, hi: int) -> dict[str, list[tuple[int, float]]]: ...

    def windows(self, lo: int, hi: int) -> dict[str, list[dict[str, Any]]]: ...

    def requests(self, lo: int, c: int, limit: int = ...) -> list[dict[str, Any]]: ...

    def incidents(self, c: int, lo: int) -> list[dict[str, Any]]: ...

    def monitor(self) -> Any: ...

    @property
    def is_diagnosed(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    def explain(self, request: dict[str, Any], limit: int) -> dict[str, Any]: ...


class RecordingSource(DataSource):
    has_cursor = True

    def __init__(self, replay: ReplayReader) -> None:
        self.replay = replay
        self.label = replay.label
        self.path = replay.label.removeprefix("recording ")
        self.start_ns, self.end_ns = replay.start_ns, replay.end_ns
        self.wall_offset_ns = replay.wall_offset_ns
        self.cursor_ns = self.end_ns  # open at the end: the incident is usually what was recorded last
        self._cache: tuple[tuple, Frame] | None = None
        self._diagnosing: threading.Thread | None = None

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
        host = r.event_dicts(lo, c, MAX_EVENTS, is_spans=False)  # as live: engine spans are per request
        frame.snapshots = r.snapshots(lo, c, [e for e in host if e["kind"] == "net.microburst"])
        frame.series = r.series(lo, c)
        frame.windows = r.windows(c - int(WINDOW_S * 1e9), c)
        frame.notes["window.buckets"] = "a recording keeps counts and sums only: averages, no percentiles"
        frame.events = host if want.is_events else []
        frame.requests = r.requests(lo, c)  # the recording's own request table, not a tail of its events
        frame.requests_since_ns = max(lo, self.start_ns)
        frame.notes["explain"] = f"all of it, offline: agent explain --recording {self.path} --slowest 5"
        if not frame.requests:
            frame.notes["requests"] = "no engine requests in the recording in the 5 min before the cursor"
        if want.is_incidents:
            self._incidents(frame, lo, c)
        frame.status = r.status()
        if frame.incidents is not None or not want.is_incidents:
            self._cache = (key, frame)  # a frame still waiting for the diagnosis is built again next time
        return frame

    def _incidents(self, frame: Frame, lo: int, c: int) -> None:
        """Incidents come from the diagnosis re-run over the recording, built once in the background (seconds on a
        long recording): until then the frame says so and the other panels draw at once."""
        if self.replay.is_diagnosed:
            frame.incidents = self.replay.incidents(c, lo)
            return
        if self._diagnosing is None:
            self._diagnosing = threading.Thread(target=self.replay.monitor, name="gs-replay-diagnosis", daemon=True)
            self._diagnosing.start()
        frame.notes["incidents"] = "diagnosing the recording (the live diagnosis, re-run over it) …"
        frame.is_partial = True

    def request_detail(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("start_ns") is None or request.get("end_ns") is None:
            return {"request": request, "phases": [], "overlapping": [], "verdicts": [],
                    "notes": {"phases": "the request has no time window"}}
        detail = self.replay.explain(request, MAX_EVENTS)
        detail["notes"] = {}
        return detail
