"""Span intake: engine request phases and scheduler steps arrive as Unix datagrams (probes/spans/wire.py).

A receiver thread drains the socket continuously (so a slow poll never overflows the socket buffer); each poll turns
what arrived into Events (`request.<phase>`; `engine.step`, `engine.idle`, `engine.gc`, `engine.heartbeat`) and
per-request traces with latency histograms; an event of a step-kind span carries the engine thread it names as
its `tid`. Heartbeats are kept as events too: one per engine every 0.5 s is a few per cent of its step events, and
a recording needs them to show an engine that had work but sent no steps.
Engines that send spans are announced to the agent through `watch_pids`, so the kernel probes watch them; an engine
whose process is gone is dropped, with its in-flight requests (counted as evicted, reason `exited`).

The snapshot (`store.snapshot("spans")`) is a probes/spans/snapshot.py SpansSnapshot.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpusleuth.probes.config import ConfigError, check_range
from gpusleuth.probes.spans import intake_socket
from gpusleuth.probes.spans import wire as span_protocol
from gpusleuth.probes.base import PollResult, Probe, ProbeState, ProbeUnavailable, Requirement
from gpusleuth.probes.kernel.proc_info import CommCache
from gpusleuth.probes.records import Event
from gpusleuth.probes.spans.requests import RequestBook
from gpusleuth.probes.spans.snapshot import SpanSender, SpansSnapshot

log = logging.getLogger(__name__)
ENGINE_GAUGES = ("num_running", "num_waiting", "kv_usage")  # latest values per engine, from its step spans


@dataclass(slots=True)
class SpanConfig:
    interval_s: float = 0.25
    socket: str = span_protocol.DEFAULT_SOCKET
    socket_mode: str = "0666"  # engines often run as another user; spans are telemetry only
    recent_requests: int = 500  # finished requests kept in the snapshot for `agent tui` / explain
    max_queued_datagrams: int = 100_000  # between polls; beyond this datagrams are dropped and counted
    in_flight_timeout_s: float = 600.0  # a request in flight longer than this is forgotten (counted as evicted)

    def __post_init__(self) -> None:
        check_range("interval_s", self.interval_s, 0.01, 60)
        check_range("in_flight_timeout_s", self.in_flight_timeout_s, 1, 7 * 86400)
        check_range("recent_requests", self.recent_requests, 10, 100_000)
        check_range("max_queued_datagrams", self.max_queued_datagrams, 100, 10_000_000)
        try:
            mode = int(self.socket_mode, 8)
        except ValueError:
            raise ConfigError("socket_mode", f"{self.socket_mode!r} is not an octal mode like \"0660\"") from None
        check_range("socket_mode", mode, 0, 0o777)


@dataclass(slots=True)
class _Sender:
    comm: str
    is_visible: bool  # its /proc entry existed when first seen (else it lives in another pid namespace)
    ranks: set[int] = field(default_factory=set)
    last_seen_ns: int = 0
    spans: int = 0
    gauges: dict[str, Any] = field(default_factory=dict)  # ENGINE_GAUGES from rank 0's last step
    heartbeat: dict[str, Any] = field(default_factory=dict)  # heartbeat_ns, num_in_flight, step_tid
    step_tids: dict[int, int] = field(default_factory=dict)
    last_step_end_ns: dict[int, int] = field(default_factory=dict)

    def note(self, span) -> None:
        """What the snapshot keeps of one span of this engine."""
        self.ranks.add(span.rank)
        if span.kind != "step":
            return
        if span.phase == "step":
            if "num_waiting" in span.attrs:  # rank 0's scheduler state after the step
                self.gauges = {key: span.attrs.get(key) for key in ENGINE_GAUGES}
            if isinstance(span.attrs.get("tid"), int):
                self.step_tids[span.rank] = span.attrs["tid"]
            self.last_step_end_ns[span.rank] = max(span.end_ns, self.last_step_end_ns.get(span.rank, 0))
        elif span.phase == "heartbeat" and span.end_ns >= self.heartbeat.get("heartbeat_ns", 0):
            self.heartbeat = {"heartbeat_ns": span.end_ns, "num_in_flight": span.attrs.get("num_in_flight"),
                              "step_tid": span.attrs.get("tid")}


class SpanProbe(Probe):
    name = "spans"
    config_class = SpanConfig

    def __init__(self, config: SpanConfig) -> None:
        super().__init__(config)
        self._sock: socket.socket | None = None
        self._queue: deque[bytes] = deque()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.book = RequestBook(config.recent_requests)
        self._senders: dict[int, _Sender] = {}
        self._comms = CommCache()
        self.queue_datagrams: int | None = None  # the socket's queue length in datagrams (intake_socket.py)
        self.received = self.decode_errors = self.spans_total = self.queue_drops = self.unknown_spans = 0

    @classmethod
    def requirements(cls) -> list[Requirement]:
        parent = Path(span_protocol.DEFAULT_SOCKET).parent
        writable = os.access(parent if parent.exists() else parent.parent, os.W_OK)
        return [Requirement("socket directory", writable, str(parent), "run as root or set probes.spans.socket")]

    def start(self) -> None:
        path = self.config.socket
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if os.path.exists(path):
                os.unlink(path)  # the agent holds the pid lock, so any socket here is a dead agent's
            sock, self.queue_datagrams = intake_socket.datagram_socket()
            sock.bind(path)
            os.chmod(path, int(self.config.socket_mode, 8))
        except OSError as exc:
            raise ProbeUnavailable(f"cannot bind span socket {path}: {exc.strerror}; set probes.spans.socket "
                                   "to a writable path") from None
        sock.setblocking(False)
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._receive, name="span-intake", daemon=True)
        self._thread.start()
        qlen = f", queue {self.queue_datagrams} datagrams" if self.queue_datagrams else ""
        self.set_status(ProbeState.OK, path=f"unix datagrams on {path}{qlen}")

    def _receive(self) -> None:
        """Wait until the socket is readable, then take every datagram queued before touching the shared queue:
        one interpreter-lock hand-off per burst rather than per datagram."""
        size = span_protocol.MAX_DATAGRAM + 1024
        waiter = select.poll()
        waiter.register(self._sock, select.POLLIN)
        while not self._stop.is_set():
            if not waiter.poll(200):
                continue
            batch = []
            try:
                while len(batch) < 4096:
                    batch.append(self._sock.recv(size))
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return
            room = max(self.config.max_queued_datagrams - len(self._queue), 0)
            if len(batch) > room:
                self.queue_drops += len(batch) - room
                batch = batch[:room]
            self._queue.extend(batch)

    def poll(self, now_ns: int) -> PollResult:
        if self._sock is None:
            raise ProbeUnavailable("not started")
        events = []
        while self._queue:
            data = self._queue.popleft()
            self.received += 1
            try:
                pid, spans, num_unknown = span_protocol.decode_batch(data)
            except span_protocol.SpanDecodeError as exc:
                self.decode_errors += 1
                if self.decode_errors <= 3:
                    log.warning("dropped a malformed span datagram: %s", exc)
                continue
            self.unknown_spans += num_unknown
            events.extend(self._ingest(pid, spans, now_ns))
        self.book.expire(now_ns, int(self.config.in_flight_timeout_s * 1e9))
        self._forget_exited()
        return PollResult(events=events, snapshot=self._snapshot(now_ns))

    def _forget_exited(self) -> None:
        for pid in [p for p, s in self._senders.items() if s.is_visible and not os.path.exists(f"/proc/{p}")]:
            del self._senders[pid]
            self.book.forget_engine(pid)

    def _ingest(self, pid: int, spans, now_ns: int) -> list[Event]:
        comm = self._comms.get(pid)
        sender = self._senders.get(pid)
        if sender is None:
            sender = self._senders[pid] = _Sender(comm, os.path.exists(f"/proc/{pid}"))
        sender.last_seen_ns = now_ns
        sender.spans += len(spans)
        self.spans_total += len(spans)
        out = []
        for span in spans:
            sender.note(span)
            kind = f"engine.{span.phase}" if span.kind == "step" else f"request.{span.phase}"
            tid = span.attrs.get("tid")  # the engine thread a step-kind span ran on (or names)
            out.append(Event(kind, self.name, span.start_ns, span.end_ns, pid=pid, comm=comm,
                             tid=tid if isinstance(tid, int) else 0, attrs={
                "request_id": span.request_id, "rank": span.rank, "tokens": span.tokens,
                "batch_size": span.batch_size, **span.attrs}))
            if span.kind == "request":
                self.book.add(pid, span)
            elif span.phase == "heartbeat" and isinstance(span.attrs.get("oldest_in_flight_ns"), int):
                self.book.close_before(pid, span.attrs["oldest_in_flight_ns"])
        return out

    def _snapshot(self, now_ns: int) -> SpansSnapshot:
        book = self.book
        senders = {p: SpanSender(s.comm, sorted(s.ranks), s.last_seen_ns, s.spans, **s.gauges, **s.heartbeat,
                                 step_tids=dict(s.step_tids), last_step_end_ns=dict(s.last_step_end_ns))
                   for p, s in self._senders.items()}
        return SpansSnapshot(
            t_ns=now_ns, socket=self.config.socket, received_total=self.received,
            decode_errors_total=self.decode_errors, queue_drops_total=self.queue_drops, spans_total=self.spans_total,
            senders=senders, watch_pids=sorted(self._senders), in_flight=len(book.in_flight),
            evicted_in_flight=book.evicted_in_flight, evicted_by_reason=dict(book.evicted),
            late_spans_total=book.late_spans, unknown_spans_total=self.unknown_spans,
            finished_total=book.finished_total,
            histograms={p: {m: h.snapshot() for m, h in hs.items()} for p, hs in book.hists.items()},
            recent=list(book.recent))

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
