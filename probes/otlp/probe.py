"""OTLP trace intake: engines we did not write (vLLM with `--otlp-traces-endpoint`) send their request spans here,
and each becomes the request phases of the diagnosis contract, on the agent's clock, from the sending process.

Listeners (probes/otlp/servers.py) take payloads on their own threads. Each poll decodes what arrived
(probes/otlp/decode.py), turns request spans into phases (probes/otlp/genai.py; wall clock -> CLOCK_MONOTONIC
with the agent's offset, read fresh each poll) and sends them, as the engine's own spans, to the span intake's
socket (probes/spans/wire.py, sender pid = the engine process): from there they take exactly the bundled
engine's path (`request.<phase>` Events, the request book's rows, latency histograms, auto-watch, `explain`).
The sender is the local process that owns the connection where one is found (root sees every process's
sockets), else the pid the span's resource names (process.pid, vLLM's vllm.process_id, service.instance.id).

The snapshot (`store.snapshot("otlp")`) is a probes/otlp/snapshot.py OtlpSnapshot.
"""
from __future__ import annotations

import dataclasses
import logging
import socket
import threading
from collections import deque
from dataclasses import dataclass

from gpusleuth.probes.base import PollResult, Probe, ProbeState, ProbeUnavailable, Requirement
from gpusleuth.probes.config import check_range
from gpusleuth.probes.otlp import decode, genai
from gpusleuth.probes.otlp.peer import PeerPids, resource_pid
from gpusleuth.probes.otlp.servers import HttpIntake, Payload, grpc_intake, split_listen
from gpusleuth.probes.otlp.snapshot import OtlpSender, OtlpSnapshot
from gpusleuth.probes.records import wall_offset_ns
from gpusleuth.probes.spans import wire
from gpusleuth.probes.spans.synthetic import SPANS_PER_DATAGRAM

log = logging.getLogger(__name__)


@dataclass(slots=True)
class OtlpConfig:
    interval_s: float = 0.25
    http_listen: str = "127.0.0.1:4318"  # OTLP/HTTP (protobuf and JSON); "" = off
    grpc_listen: str = "127.0.0.1:4317"  # OTLP/gRPC (vLLM's default protocol); "" = off
    span_socket: str = wire.DEFAULT_SOCKET  # must be probes.spans.socket: the phases go to the span intake
    max_queued_payloads: int = 10_000  # between polls; beyond this exporters are told to back off (HTTP 503)
    max_body_mb: int = 16

    def __post_init__(self) -> None:
        check_range("interval_s", self.interval_s, 0.01, 60)
        check_range("max_queued_payloads", self.max_queued_payloads, 10, 1_000_000)
        check_range("max_body_mb", self.max_body_mb, 1, 256)
        for key in ("http_listen", "grpc_listen"):
            if getattr(self, key):
                split_listen(key, getattr(self, key))


class OtlpProbe(Probe):
    name = "otlp"
    config_class = OtlpConfig

    def __init__(self, config: OtlpConfig) -> None:
        super().__init__(config)
        self._queue: deque[Payload] = deque()
        self._lock = threading.Lock()
        self._http: HttpIntake | None = None
        self._grpc = None
        self._grpc_note = ""
        self._out: socket.socket | None = None
        self._senders: dict[int, OtlpSender] = {}
        self.peers = PeerPids()
        self.snap = OtlpSnapshot(span_socket=config.span_socket)

    @classmethod
    def requirements(cls) -> list[Requirement]:
        try:
            import grpc  # noqa: F401, PLC0415
            has_grpc = True
        except ImportError:
            has_grpc = False
        return [Requirement("grpcio", has_grpc, "OTLP/gRPC listener (vLLM's default protocol)",
                            "pip install 'gpusleuth[otlp]', or run vLLM with "
                            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf", is_optional=True)]

    def start(self) -> None:
        cfg, max_body = self.config, self.config.max_body_mb << 20
        try:
            if cfg.http_listen:
                self._http = HttpIntake(*split_listen("http_listen", cfg.http_listen), self._sink, self.peers,
                                        max_body)
                self._http.start()
                self.snap.http_listen = f"{cfg.http_listen.rpartition(':')[0]}:{self._http.server_port}"
        except OSError as exc:
            raise ProbeUnavailable(f"cannot listen on {cfg.http_listen} for OTLP/HTTP ({exc.strerror or exc}); "
                                   "set probes.otlp.http_listen (an OpenTelemetry Collector may hold the port)")
        self._start_grpc(max_body)
        if not self.snap.http_listen and not self.snap.grpc_listen:
            self.stop()
            raise ProbeUnavailable(f"no OTLP listener: {self._grpc_note or 'both listeners are off'}; set "
                                   "probes.otlp.http_listen or probes.otlp.grpc_listen")
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)
        self._set_status()

    def _start_grpc(self, max_body: int) -> None:
        listen = self.config.grpc_listen
        if not listen:
            return
        try:
            self._grpc = grpc_intake(*split_listen("grpc_listen", listen), self._sink, self.peers, max_body)
        except ImportError:
            self._grpc_note = "OTLP/gRPC off: grpcio is not installed (pip install 'gpusleuth[otlp]')"
        except OSError as exc:
            self._grpc_note = f"OTLP/gRPC off: cannot listen on {listen} ({exc}); set probes.otlp.grpc_listen"
        else:
            self.snap.grpc_listen = f"{listen.rpartition(':')[0]}:{self._grpc.bound_port}"

    def _set_status(self, forward_failed: bool = False) -> None:
        where = ", ".join(f"OTLP/{k} on {v}" for k, v in (("HTTP", self.snap.http_listen),
                                                            ("gRPC", self.snap.grpc_listen)) if v)
        path = f"{where} -> span socket {self.config.span_socket}"
        if forward_failed:
            self.set_status(ProbeState.DEGRADED, f"the span intake is not listening at {self.config.span_socket}: "
                            "enable probe spans and set probes.otlp.span_socket to probes.spans.socket", path)
        elif self._grpc_note:
            self.set_status(ProbeState.DEGRADED, self._grpc_note, path)
        else:
            self.set_status(ProbeState.OK, "", path)

    def _sink(self, payload: Payload) -> bool:
        """On a listener thread: queue the payload for the next poll, or refuse it when too many wait."""
        with self._lock:
            if len(self._queue) >= self.config.max_queued_payloads:
                self.snap.queue_drops_total += 1
                return False
            self._queue.append(payload)
            return True

    def poll(self, now_ns: int) -> PollResult:
        if self._out is None:
            raise ProbeUnavailable("not started")
        with self._lock:
            got = list(self._queue)
            self._queue.clear()
        offset = wall_offset_ns()
        by_pid: dict[int, list[wire.Span]] = {}
        for payload in got:
            self.snap.payloads_total += 1
            try:
                msg = self._message(payload)
            except decode.OtlpDecodeError as exc:
                self.snap.decode_errors_total += 1
                if self.snap.decode_errors_total <= 3:
                    log.warning("dropped a malformed OTLP payload: %s", exc)
                continue
            for span in decode.spans(msg):
                self._take(span, payload.peer_pid, offset, now_ns, by_pid)
        failed = self._forward(by_pid)
        self._set_status(forward_failed=failed)
        senders = {p: dataclasses.replace(s) for p, s in self._senders.items()}
        return PollResult(snapshot=dataclasses.replace(self.snap, t_ns=now_ns, senders=senders))

    @staticmethod
    def _message(payload: Payload):
        if payload.kind == "message":
            return payload.data
        if payload.kind == "json":
            return decode.parse_json(payload.data)
        return decode.parse_protobuf(payload.data)

    def _take(self, span: decode.OtlpSpan, peer_pid: int | None, offset: int, now_ns: int,
              by_pid: dict[int, list[wire.Span]]) -> None:
        self.snap.spans_total += 1
        if not genai.is_request_span(span.name, span.attrs):
            self.snap.other_spans_total += 1
            return
        pid, how = (peer_pid, "peer") if peer_pid else (resource_pid(span.resource), "resource")
        pid, how = (pid, how) if pid else (0, "none")
        extra = {"trace_id": span.trace_id, "span_id": span.span_id}
        phases = genai.request_spans(span.name, span.attrs, span.start_unix_ns - offset, span.end_unix_ns - offset,
                                     span.status_code, extra)
        if phases is None:
            self.snap.unphased_total += 1
            return
        self.snap.requests_total += 1
        sender = self._senders.setdefault(pid, OtlpSender(str(span.resource.get("service.name", "")), how))
        sender.requests += 1
        sender.last_seen_ns = now_ns
        by_pid.setdefault(pid, []).extend(phases)

    def _forward(self, by_pid: dict[int, list[wire.Span]]) -> bool:
        """Send the phases to the span intake as datagrams from each engine; True if some did not go."""
        failed = False
        for pid, spans in by_pid.items():
            for i in range(0, len(spans), SPANS_PER_DATAGRAM):
                try:
                    self._out.sendto(wire.encode(pid, spans[i:i + SPANS_PER_DATAGRAM]), self.config.span_socket)
                except OSError:  # absent (spans probe off), refused, or its buffer full: counted
                    self.snap.forward_errors_total += 1
                    failed = True
        return failed

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=0.5).wait(2)
            self._grpc = None
        if self._out is not None:
            self._out.close()
            self._out = None
        self.set_status(ProbeState.STOPPED, "stopped")
