"""The two OTLP listeners: OTLP/HTTP (POST /v1/traces, protobuf or JSON, optionally gzip) on a threading HTTP
server, and OTLP/gRPC (TraceService/Export) on grpcio. Each hands every payload, with the local process that sent
it where one can be found, to a sink on its own threads; decoding and everything after it happen in the probe's
poll, off these threads."""
from __future__ import annotations

import gzip
import threading
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, NamedTuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from gpusleuth.probes.otlp.peer import PeerPids, parse_grpc_peer


class Payload(NamedTuple):
    kind: str  # "protobuf" | "json" | "message" (already decoded by grpc)
    data: Any
    peer_pid: int | None
    transport: str  # "http" | "grpc"


Sink = Callable[[Payload], bool]  # False: the queue is full, the payload was dropped
TRACES_PATH = "/v1/traces"


def split_listen(key: str, listen: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); the config key is named in the error."""
    from gpusleuth.probes.config import ConfigError  # noqa: PLC0415
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"{listen!r} is not HOST:PORT (e.g. 127.0.0.1:4318), or \"\" for off")
    return host.strip("[]"), int(port)


class _Handler(BaseHTTPRequestHandler):
    server: "HttpIntake"
    protocol_version = "HTTP/1.1"  # keep-alive: the exporter reuses its connection

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?")[0] != TRACES_PATH:
            return self._answer(404, b"only POST /v1/traces is served here\n", "text/plain")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= self.server.max_body:
            return self._answer(413, b"body too large or without Content-Length\n", "text/plain")
        body = self.rfile.read(length)
        try:
            body = _inflate(body, self.headers.get("Content-Encoding", ""))
        except (OSError, zlib.error):
            return self._answer(400, b"bad Content-Encoding\n", "text/plain")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        kind = "json" if ctype == "application/json" else "protobuf"
        peer = self.server.peers.lookup(self.client_address[0], self.client_address[1], self.server.server_port)
        if not self.server.sink(Payload(kind, body, peer, "http")):
            return self._answer(503, b"intake queue full\n", "text/plain")
        if kind == "json":
            return self._answer(200, b"{}", "application/json")
        return self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def _answer(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: no line per request
        pass


def _inflate(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class HttpIntake(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, sink: Sink, peers: PeerPids, max_body: int) -> None:
        self.sink, self.peers, self.max_body = sink, peers, max_body
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="otlp-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)


def grpc_intake(host: str, port: int, sink: Sink, peers: PeerPids, max_body: int) -> Any:
    """A started grpc server with the OTLP TraceService on host:port (OSError when it cannot bind)."""
    import grpc  # noqa: PLC0415 - the gRPC listener is optional (gpusleuth[otlp])
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc  # noqa: PLC0415

    ours = {"port": port}  # the bound port, once known (0 asks for any)

    class Servicer(pb_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 - the service's method name
            where = parse_grpc_peer(context.peer())
            peer = peers.lookup(where[0], where[1], ours["port"]) if where else None
            if not sink(Payload("message", request, peer, "grpc")):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "intake queue full")
            return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="otlp-grpc"),
                         options=[("grpc.max_receive_message_length", max_body), ("grpc.so_reuseport", 0)])
    pb_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
    try:
        bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    except RuntimeError as exc:  # grpcio raises RuntimeError when it cannot bind
        raise OSError(str(exc)) from None
    if port and bound != port:
        raise OSError(f"cannot bind {host}:{port}")
    ours["port"] = bound
    server.start()
    server.bound_port = bound
    return server
