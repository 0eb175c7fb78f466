"""Spans to the agent (Unix datagrams, never blocking) and the matching NVTX ranges on CUDA.

The step loop collects a step's spans and sends them in one `flush()`, never blocking. A send the agent's queue
cannot take now (EAGAIN, ENOBUFS: the agent is busy for a moment) waits in a bounded backlog and goes first at the
next flush, so a short stall of the agent loses nothing and the order holds; with no listener (ENOENT,
ECONNREFUSED) or a full backlog the spans are dropped and counted by reason, so the agent's absence or slowness
never stalls the engine. One emitter per thread (the step thread's, the server thread's: `sibling()`); an emitter
given a GcWatch also sends the process's garbage collections when it flushes. Spans of phases newer than the
first wire version go in datagrams of their own (wire.py says why).
"""
from __future__ import annotations

import errno
import os
import socket
from collections import deque

import torch

from gpusleuth.engine.gc_spans import GcWatch
from gpusleuth.probes.spans import wire as span_protocol
from gpusleuth.probes.spans.wire import Span

_CORE = frozenset(span_protocol.CORE_PHASES)
_NO_AGENT_ERRNOS = {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTCONN}
_BUSY_ERRNOS = {errno.EAGAIN, errno.ENOBUFS}
MAX_BACKLOG_BYTES = 4 << 20  # datagrams waiting for a busy agent; ~13k spans, seconds of a busy engine's steps
SNDBUF_BYTES = 4 << 20  # how much the kernel queues for the agent before EAGAIN (capped by net.core.wmem_max)


class SpanEmitter:
    """Buffers spans and sends them per step; `num_dropped` / `num_sent` count spans (not datagrams)."""

    def __init__(self, rank: int, path: str | None = None, is_enabled: bool = True,
                 gc_watch: GcWatch | None = None) -> None:
        self.rank = rank
        self.path = path or span_protocol.socket_path()
        self.is_enabled = is_enabled
        self.gc_watch = gc_watch
        self.num_sent = 0
        self.num_dropped = 0
        self.dropped_by_reason = {"no_agent": 0, "backlog_full": 0, "error": 0}
        self.num_deferred = 0  # spans that waited in the backlog and were sent later
        self._backlog: deque[tuple[list[Span], bytes]] = deque()
        self._backlog_bytes = 0
        self._pending: list[Span] = []
        self.last_error = ""
        self._sock: socket.socket | None = None
        self._pid = os.getpid()

    def add(self, kind: str, phase: str, request_id: str, start_ns: int, end_ns: int, tokens: int = 0,
            batch_size: int = 0, **attrs) -> None:
        if self.is_enabled:
            self._pending.append(Span(kind, phase, request_id, self.rank, start_ns, max(end_ns, start_ns),
                                      tokens, batch_size, attrs))

    def sibling(self) -> "SpanEmitter":
        """An emitter for another thread of this process: same rank, socket, switch and GC watch."""
        return SpanEmitter(self.rank, self.path, self.is_enabled, self.gc_watch)

    def flush(self) -> None:
        """Send everything buffered, split so each datagram stays under the protocol's size limit."""
        if self.gc_watch is not None and self.gc_watch.pending:
            self._add_gc()
        if self._backlog:
            self._send_backlog()
        if not self._pending:
            return
        spans, self._pending = self._pending, []
        core = [s for s in spans if s.phase in _CORE]
        # the newer phases first: a request's "stream" must reach the agent before its "finished" closes it
        groups = (spans,) if len(core) == len(spans) else ([s for s in spans if s.phase not in _CORE], core)
        for group in groups:
            for chunk in self._chunks(group):
                self._send(chunk)

    def _add_gc(self) -> None:
        for rec in self.gc_watch.drain():
            self.add("step", "gc", "gc", rec.start_ns, rec.end_ns, tid=rec.tid, generation=rec.generation,
                     collected=rec.collected)

    def _chunks(self, spans: list[Span]):
        # ~300 bytes per span keeps 150 spans well under MAX_DATAGRAM; re-split if attrs make one too big.
        step = 150
        for i in range(0, len(spans), step):
            chunk = spans[i:i + step]
            data = span_protocol.encode(self._pid, chunk)
            if len(data) > span_protocol.MAX_DATAGRAM and len(chunk) > 1:
                half = len(chunk) // 2
                yield from self._chunks(chunk[:half])
                yield from self._chunks(chunk[half:])
            else:
                yield chunk, data

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
            except OSError:
                pass
        return self._sock

    def _send(self, item: tuple[list[Span], bytes]) -> None:
        if self._backlog:  # keep the order: behind what already waits
            self._defer(item)
            return
        chunk, data = item
        try:
            self._socket().sendto(data, self.path)
            self.num_sent += len(chunk)
        except OSError as exc:
            self._failed(item, exc)

    def _send_backlog(self) -> None:
        while self._backlog:
            chunk, data = self._backlog[0]
            try:
                self._socket().sendto(data, self.path)
            except OSError as exc:
                if exc.errno in _BUSY_ERRNOS:
                    return  # still busy: try again at the next flush
                self._backlog.popleft()
                self._backlog_bytes -= len(data)
                self._drop(chunk, exc)
                continue
            self._backlog.popleft()
            self._backlog_bytes -= len(data)
            self.num_sent += len(chunk)
            self.num_deferred += len(chunk)

    def _failed(self, item: tuple[list[Span], bytes], exc: OSError) -> None:
        if exc.errno in _BUSY_ERRNOS:
            self._defer(item)
        else:
            self._drop(item[0], exc)

    def _defer(self, item: tuple[list[Span], bytes]) -> None:
        if self._backlog_bytes + len(item[1]) > MAX_BACKLOG_BYTES:
            self.num_dropped += len(item[0])
            self.dropped_by_reason["backlog_full"] += len(item[0])
            return
        self._backlog.append(item)
        self._backlog_bytes += len(item[1])

    def _drop(self, chunk: list[Span], exc: OSError) -> None:
        # ENOENT/ECONNREFUSED: no agent. Anything else is also dropped (and kept in last_error) because the step
        # loop must not fail for observability.
        self.num_dropped += len(chunk)
        if exc.errno in _NO_AGENT_ERRNOS:
            self.dropped_by_reason["no_agent"] += len(chunk)
        else:
            self.dropped_by_reason["error"] += len(chunk)
            self.last_error = f"{self.path}: {exc.strerror or exc}"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Nvtx:
    """NVTX ranges when CUDA is in use, no-ops otherwise (so CPU runs pay nothing)."""

    def __init__(self, is_enabled: bool) -> None:
        self.is_enabled = is_enabled and torch.cuda.is_available()

    def push(self, name: str) -> None:
        if self.is_enabled:
            torch.cuda.nvtx.range_push(name)

    def pop(self) -> None:
        if self.is_enabled:
            torch.cuda.nvtx.range_pop()

    def start(self, name: str) -> int | None:
        """A range that may end on another step (request phases); returns its handle."""
        return torch.cuda.nvtx.range_start(name) if self.is_enabled else None

    def end(self, handle: int | None) -> None:
        if self.is_enabled and handle is not None:
            torch.cuda.nvtx.range_end(handle)
