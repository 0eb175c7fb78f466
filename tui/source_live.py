"""The live source: the running agent's control socket (status, snapshot, events, requests, explain)."""
from __future__ import annotations

import socket
import threading
from collections import deque
from typing import Any

from gpusleuth.agent.control.client import ControlClient, ControlError, ControlPermissionDenied
from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.kernel.snapshot import SchedSnapshot, SyscallSnapshot
from gpusleuth.probes.spans.snapshot import RequestRow
from gpusleuth.tui.history import GPU_SERIES, FrameHistory
from gpusleuth.tui.source import HISTORY_S, DataSource, Frame, SourceError, Want

MAX_EVENTS = 2000  # kept client-side for the Events screen
# Re-ask for this much before the last fetch: a probe hands its events to the store when it polls (every 1 s by
# default), so an event can land in the store up to one poll interval after it ended.
EVENT_OVERLAP_NS = 2_000_000_000
BACKFILL_LIMIT = 20000
REQUESTS_SHOWN = 5000  # everything the span intake keeps (probes.spans.recent_requests, 500 by default)
# The agent scans its whole event ring per `events` call: once a second is plenty for a list people read.
EVENTS_PERIOD_NS = 1_000_000_000
INCIDENTS_PERIOD_NS = 1_000_000_000  # incidents open within seconds of onset: a second's delay is fine


class Unsupported(SourceError):
    """The agent does not know this method (an older agent); the screens say so instead of failing."""


class EventBuffer:
    """Recent host events without duplicates, each given an increasing "seq" so screens can append only new ones.

    Engine span events (source "spans") are left out: a busy engine sends a hundred a second, which would push the
    host events out of the buffer; the Requests screen shows them per request."""

    def __init__(self, maxlen: int = MAX_EVENTS) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._keys: set[tuple] = set()
        self.seq = 0

    def add(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            if e.get("source") == "spans":
                continue
            key = (e.get("kind"), e.get("start_ns"), e.get("end_ns"), e.get("pid"), e.get("tid"))
            if key in self._keys:
                continue
            self._keys.add(key)
            self.seq += 1
            self.events.append({**e, "seq": self.seq})
        if len(self._keys) > 2 * self.events.maxlen:  # forget keys of events that left the buffer
            self._keys = {(e.get("kind"), e.get("start_ns"), e.get("end_ns"), e.get("pid"), e.get("tid"))
                          for e in self.events}


class LiveSource(DataSource):
    is_live = True

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.path = socket_path
        self.label = f"live {socket_path}"
        self.client = ControlClient(socket_path, timeout=timeout)
        self.history = FrameHistory()
        self.buffer = EventBuffer()
        self._lock = threading.Lock()  # one connection, used by the refresh worker and the detail worker
        self._events_until: int | None = None
        self._is_backfilled = False
        self._snaps: dict[str, Any] = {}  # source -> its latest snapshot object
        self._window_cache: dict[str, tuple] = {}
        self._incidents: tuple[int, list[dict[str, Any]] | None, str] | None = None  # (asked at, answer, note)

    def call(self, method: str, **params: Any) -> Any:
        """One control call; AgentNotRunning/ControlPermissionDenied pass through for the caller to report."""
        with self._lock:
            return self.client.call(method, **params)

    def _call(self, method: str, **params: Any) -> Any:
        try:
            return self.call(method, **params)
        except ControlPermissionDenied as exc:
            raise SourceError(str(exc)) from None
        except ControlError as exc:
            if exc.code == "unknown_method":
                raise Unsupported(f"the agent has no {method!r} method (update the agent)") from None
            raise SourceError(str(exc)) from None
        except (OSError, ValueError) as exc:  # timeouts, a broken reply
            raise SourceError(f"control socket {self.path}: {exc}") from None

    def fetch(self, want: Want) -> Frame:
        status = self._call("status")
        now = int(status.get("monotonic_ns", 0))
        snaps = self._snapshots(sorted(want.sources | {"gpu", "net"}), now)  # gpu, net: sparklines without gaps
        frame = Frame(t_ns=now, wall_offset_ns=int(status.get("wall_offset_ns", 0)), status=status,
                      snapshots=snaps)
        if not self._is_backfilled:
            self._backfill(now)
        self.history.update_gpu(snaps.get("gpu"))
        self.history.update_net(snaps.get("net"))
        self._windows(want, snaps, frame)
        if want.is_events:
            if self._events_until is None or now - self._events_until >= EVENTS_PERIOD_NS:
                self._fetch_events(now)
            frame.events = list(self.buffer.events)
        if want.is_requests:
            frame.requests = self._requests(snaps, frame)
            if frame.requests:  # the agent keeps its newest requests only: the list is complete from its oldest
                frame.requests_since_ns = min(int(r.get("end_ns") or 0) for r in frame.requests)
            self.history.update_requests(now, frame.requests)
        if want.is_incidents:
            self._fetch_incidents(now, frame)
        frame.series = self.history.snapshot_series()
        return frame

    def _fetch_incidents(self, now_ns: int, frame: Frame) -> None:
        if self._incidents is None or now_ns - self._incidents[0] >= INCIDENTS_PERIOD_NS:
            try:
                got, note = self._call("incidents", since_ns=now_ns - int(HISTORY_S * 1e9)) or [], ""
            except Unsupported as exc:
                got, note = None, str(exc)
            self._incidents = (now_ns, got, note)
        frame.incidents = self._incidents[1]
        if self._incidents[2]:
            frame.notes["incidents"] = self._incidents[2]

    def _snapshots(self, sources: list[str], now_ns: int) -> dict[str, Any]:
        """Latest snapshot per source. A probe that polls on an interval is asked again only once its next poll
        is due: the syscall and sched snapshots can be large (every process when watching all), and decoding
        an unchanged one twice a second is most of what the TUI would cost."""
        due = [s for s in sources if self._is_due(s, now_ns)]
        if due:
            fresh = self._call("snapshot", sources=due) or {}
            for source in due:
                if source in fresh:
                    self._snaps[source] = self._decode(source, fresh[source])
                else:
                    self._snaps.pop(source, None)  # the probe is gone
        return {s: self._snaps[s] for s in sources if s in self._snaps}

    def _decode(self, source: str, data: Any) -> Any:
        try:
            return snapshot_codec.decode(source, data)
        except snapshot_codec.SnapshotMismatch as exc:
            raise SourceError(str(exc)) from None

    def _is_due(self, source: str, now_ns: int) -> bool:
        snap = self._snaps.get(source)
        if snap is None:
            return True
        interval = snap.interval_s if isinstance(snap, (SyscallSnapshot, SchedSnapshot)) else 0.0
        return not interval or now_ns - snap.t_ns >= interval * 1e9

    def _windows(self, want: Want, snaps: dict[str, Any], frame: Frame) -> None:
        """Windowed latency rows, recomputed only when the probe's snapshot is new (same list object otherwise,
        so screens can skip re-ranking it)."""
        for source, key in (("syscalls", "syscalls"), ("sched", "runq")):
            if source not in want.sources:
                continue
            snap = snaps.get(source)
            t = snap.t_ns if snap is not None else None
            cached = self._window_cache.get(key)
            if cached is None or cached[0] != t:
                cached = self._window_cache[key] = (t, *self.history.window(source, snap))
            frame.windows[key] = cached[1]
            if not cached[2]:
                frame.notes[f"window.{key}"] = "window still filling"

    def _requests(self, snaps: dict[str, Any], frame: Frame) -> list[RequestRow] | None:
        """The span intake's recent requests (the `requests` method's source) without a second call."""
        spans = snaps.get("spans")
        if spans is not None:
            return spans.recent[-REQUESTS_SHOWN:]
        try:
            return self._call("requests", limit=REQUESTS_SHOWN)
        except Unsupported as exc:
            frame.notes["requests"] = str(exc)
            return None

    def _fetch_events(self, now_ns: int) -> None:
        start = now_ns - int(HISTORY_S * 1e9) if self._events_until is None else self._events_until - EVENT_OVERLAP_NS
        self.buffer.add(self._call("events", start_ns=start, limit=MAX_EVENTS) or [])
        self._events_until = now_ns

    def _backfill(self, now_ns: int) -> None:
        """Recent minutes of GPU and network series from the agent's sample ring, once, so sparklines start full."""
        self._is_backfilled = True
        start = now_ns - int(HISTORY_S * 1e9)
        for name in GPU_SERIES:
            by_gpu: dict[str, list[tuple[int, float]]] = {}
            for s in self._call("samples", series=f"gpu.{name}", start_ns=start, limit=BACKFILL_LIMIT) or []:
                by_gpu.setdefault((s.get("labels") or {}).get("gpu", "?"), []).append((s["t_ns"], s["value"]))
            for gpu, points in by_gpu.items():
                self.history.backfill(f"gpu.{gpu}.{name}", points)
        last: dict[str, int] = {}
        by_key: dict[str, list[tuple[int, float]]] = {}
        for s in self._call("samples", series="net.bytes", start_ns=start, limit=BACKFILL_LIMIT) or []:
            labels = s.get("labels") or {}
            key = f"net.{labels.get('interface')}.{labels.get('direction')}_bps"
            prev = last.get(key)
            last[key] = s["t_ns"]
            if prev is not None and s["t_ns"] > prev:  # each sample holds the bytes since the previous poll
                by_key.setdefault(key, []).append((s["t_ns"], s["value"] * 8e9 / (s["t_ns"] - prev)))
        for key, points in by_key.items():
            self.history.backfill(key, points)

    def request_detail(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            detail = self._call("explain", request_id=request.get("request_id", ""))
        except Unsupported as exc:
            return {"request": request, "phases": [], "overlapping": [], "verdicts": [], "notes": {"verdicts": str(exc)}}
        detail.setdefault("notes", {})
        return detail

    def close(self) -> None:
        with self._lock:
            self.client.close()

    def abort(self) -> None:
        # Without the lock (a worker may hold it, blocked in recv): shutdown() wakes that recv at once.
        sock = getattr(self.client, "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
