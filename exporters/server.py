"""The agent's /metrics endpoint: a fresh registry with every available collector, rendered off the request path
(exporters/exposition.py) and served by a threading WSGI server.

The listen address picks the address family, so `[::1]:9464` works as well as `127.0.0.1:9464`; scrapers that ask
for OpenMetrics get it, and those that accept gzip get gzip.
"""
from __future__ import annotations

import importlib
import logging
import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry

from gpusleuth.exporters.base import BudgetCollector, ExportOptions, SnapshotCollector
from gpusleuth.exporters.exposition import Exposition
from gpusleuth.exporters.registry import COLLECTORS

log = logging.getLogger(__name__)


def build_registry(store, collectors: tuple[str, ...] = COLLECTORS,
                   options: ExportOptions | None = None) -> tuple[CollectorRegistry, list[str]]:
    """A registry with every collector that imports, and the series-budget report last; returns it and the names
    that could not be loaded."""
    options = options or ExportOptions()
    registry = CollectorRegistry(auto_describe=False)
    missing = []
    for spec in collectors:
        module, _, cls = spec.partition(":")
        try:
            klass = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{spec} ({exc})")
            continue
        registry.register(klass(store, options) if issubclass(klass, SnapshotCollector) else klass(store))
    registry.register(BudgetCollector(options))
    return registry, missing


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck scraper never holds the agent's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # scrapes every second would fill the log
        pass


def metrics_app(exposition: Exposition):
    """The WSGI app: GET any path returns the latest body; OPTIONS lists the methods; others get 405."""
    def app(environ, start_response):
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            start_response("200 OK", [("Allow", "OPTIONS,GET")])
            return [b""]
        if method != "GET":
            start_response("405 Method Not Allowed", [("Allow", "OPTIONS,GET")])
            return [f"# HTTP 405: {method}; use OPTIONS or GET\n".encode()]
        if environ.get("PATH_INFO") == "/favicon.ico":
            start_response("200 OK", [])
            return [b""]
        is_gzip = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
        content_type, body, is_gzipped = exposition.body(environ.get("HTTP_ACCEPT", ""), is_gzip)
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if is_gzipped:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]
    return app


class ExporterServer:
    """Serves the collectors over HTTP in a background thread; a service the agent starts and stops."""

    name = "exporter"

    def __init__(self, store, host: str, port: int, render_interval_s: float = 1.0,
                 options: ExportOptions | None = None) -> None:
        self.registry, self.missing = build_registry(store, options=options)
        for m in self.missing:
            log.info("exporter: collector not loaded: %s", m)
        self.exposition = Exposition(self.registry, render_interval_s)
        self.host, self.port = host, port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Listen now (OSError if the address is taken or not ours)."""
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsServer", (_Server,), {"address_family": family})
        self._httpd = make_server(self.host, self.port, metrics_app(self.exposition), server_class, _QuietHandler)
        self.port = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="exporter-http", daemon=True)
        self._thread.start()
        self.exposition.start()

    def stop(self) -> None:
        self.exposition.stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
