"""NVTX intake: ranges from any process that loads the injection library (gs_nvtx.c; opt-in per engine with
NVTX_INJECTION64_PATH=<libgsnvtx.so> in its environment) arrive as Unix datagrams and become Events.

One datagram is UTF-8 JSON: {"v": 1, "pid": <sender>, "dropped": <records the library dropped, cumulative>,
"ranges": [{"n": name, "d": domain ("" = default), "s": start_ns, "e": end_ns, "t": tid, "k": depth (-1 for
start/end ranges), "c": category, "y": 0 push/pop | 1 mark | 2 start/end, "p": payload (optional)}, ...]} with
CLOCK_MONOTONIC nanoseconds. A receiver thread drains the socket; each poll turns what arrived into Events
`nvtx.range` / `nvtx.mark` (source "nvtx", the sender's pid and the range's thread as tid; attrs name, domain,
depth, category, payload). Senders join the watch set like engine span senders.

The snapshot (`store.snapshot("nvtx")`) is a probes/nvtx/snapshot.py NvtxSnapshot.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from gpusleuth.probes.base import PollResult, Probe, ProbeState, ProbeUnavailable, Requirement
from gpusleuth.probes.config import check_range
from gpusleuth.probes.kernel.proc_info import CommCache
from gpusleuth.probes.nvtx.snapshot import NvtxSender, NvtxSnapshot
from gpusleuth.probes.records import Event

log = logging.getLogger(__name__)
DEFAULT_SOCKET = "/run/gpusleuth/nvtx.sock"
SOCKET_ENV = "GPUSLEUTH_NVTX_SOCKET"  # read by the library in the engine's process
KINDS = {0: "nvtx.range", 1: "nvtx.mark", 2: "nvtx.range"}


@dataclass(slots=True)
class NvtxConfig:
    interval_s: float = 0.25
    socket: str = DEFAULT_SOCKET  # the library sends to $GPUSLEUTH_NVTX_SOCKET, default this path
    min_duration_us: float = 0.0  # shorter ranges are counted, not stored as events
    max_events_per_poll: int = 50_000  # beyond this, ranges are counted and dropped (per-kernel ranges add up)
    max_queued_datagrams: int = 100_000

    def __post_init__(self) -> None:
        check_range("interval_s", self.interval_s, 0.01, 60)
        check_range("min_duration_us", self.min_duration_us, 0, 1e9)
        check_range("max_events_per_poll", self.max_events_per_poll, 100, 10_000_000)
        check_range("max_queued_datagrams", self.max_queued_datagrams, 100, 10_000_000)


def _remove_stale(path: str) -> None:
    """Remove a socket nobody listens on (a dead agent's); a live one is another agent's: ProbeUnavailable."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return
    raise ProbeUnavailable(f"another process listens on {path}; set probes.nvtx.socket to a path of this agent's")


class NvtxProbe(Probe):
    name = "nvtx"
    config_class = NvtxConfig

    def __init__(self, config: NvtxConfig) -> None:
        super().__init__(config)
        self._sock: socket.socket | None = None
        self._queue: deque[bytes] = deque()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._comms = CommCache()
        self.snap = NvtxSnapshot(socket=config.socket)

    @classmethod
    def requirements(cls) -> list[Requirement]:
        from gpusleuth.probes.nvtx.build import installed  # noqa: PLC0415
        lib = installed()
        return [Requirement("NVTX injection library", lib is not None, str(lib or "libgsnvtx.so not built"),
                            "python -m gpusleuth.probes.nvtx.build (agent/install.sh does it)", is_optional=True)]

    def start(self) -> None:
        path = self.config.socket
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if os.path.exists(path):
                _remove_stale(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            sock.bind(path)
            os.chmod(path, 0o666)  # engines run as other users; ranges are telemetry only
        except OSError as exc:
            raise ProbeUnavailable(f"cannot bind NVTX socket {path}: {exc.strerror}; set probes.nvtx.socket "
                                   "to a writable path") from None
        sock.settimeout(0.2)
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._receive, name="nvtx-intake", daemon=True)
        self._thread.start()
        self.set_status(ProbeState.OK, "", f"unix datagrams on {path}")

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(64 << 10)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(self._queue) >= self.config.max_queued_datagrams:
                self.snap.queue_drops_total += 1
                continue
            self._queue.append(data)

    def poll(self, now_ns: int) -> PollResult:
        if self._sock is None:
            raise ProbeUnavailable("not started")
        events: list[Event] = []
        while self._queue:
            data = self._queue.popleft()
            self.snap.datagrams_total += 1
            try:
                msg = json.loads(data.decode("utf-8", "replace"))
                pid, ranges = int(msg["pid"]), list(msg["ranges"])
            except (ValueError, KeyError, TypeError) as exc:
                self.snap.decode_errors_total += 1
                if self.snap.decode_errors_total <= 3:
                    log.warning("dropped a malformed NVTX datagram: %s", exc)
                continue
            self._ingest(pid, int(msg.get("dropped") or 0), ranges, now_ns, events)
        for pid in [p for p in self.snap.senders if not os.path.exists(f"/proc/{p}")]:
            del self.snap.senders[pid]
        senders = {p: NvtxSender(s.comm, s.ranges, s.dropped, s.last_seen_ns, list(s.domains))
                   for p, s in self.snap.senders.items()}
        snap = NvtxSnapshot(now_ns, self.snap.socket, self.snap.datagrams_total, self.snap.decode_errors_total,
                            self.snap.queue_drops_total, self.snap.ranges_total, self.snap.events_dropped_total,
                            senders, sorted(senders))
        return PollResult(events=events, snapshot=snap)

    def _ingest(self, pid: int, dropped: int, ranges: list, now_ns: int, out: list[Event]) -> None:
        sender = self.snap.senders.get(pid)
        if sender is None:
            sender = self.snap.senders[pid] = NvtxSender(self._comms.get(pid))
        sender.ranges += len(ranges)
        sender.dropped = max(sender.dropped, dropped)
        sender.last_seen_ns = now_ns
        self.snap.ranges_total += len(ranges)
        min_ns = self.config.min_duration_us * 1e3
        for r in ranges:
            try:
                start, end, kind = int(r["s"]), int(r["e"]), int(r.get("y", 0))
            except (KeyError, TypeError, ValueError):
                self.snap.decode_errors_total += 1
                continue
            domain = str(r.get("d") or "")
            if domain and domain not in sender.domains and len(sender.domains) < 64:
                sender.domains.append(domain)
            if (kind != 1 and end - start < min_ns) or len(out) >= self.config.max_events_per_poll:
                self.snap.events_dropped_total += len(out) >= self.config.max_events_per_poll
                continue
            attrs = {"name": str(r.get("n", "")), "domain": domain, "depth": int(r.get("k", 0)),
                     "category": int(r.get("c", 0))}
            if "p" in r:
                attrs["payload"] = r["p"]
            out.append(Event(KINDS.get(kind, "nvtx.range"), self.name, start, max(start, end), pid=pid,
                             tid=int(r.get("t", 0)), comm=sender.comm, attrs=attrs))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                os.unlink(self.config.socket)
            except FileNotFoundError:
                pass
        self.set_status(ProbeState.STOPPED, "stopped")
