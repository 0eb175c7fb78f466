"""The agent's /metrics endpoint: a fresh registry with every available collector, served over HTTP."""
from __future__ import annotations

import importlib
import logging
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from gpusleuth.exporters.registry import COLLECTORS

log = logging.getLogger(__name__)


def build_registry(store, collectors: tuple[str, ...] = COLLECTORS) -> tuple[CollectorRegistry, list[str]]:
    """A registry with every collector that imports; returns it and the names that could not be loaded."""
    registry = CollectorRegistry(auto_describe=False)
    missing = []
    for spec in collectors:
        module, _, cls = spec.partition(":")
        try:
            collector = getattr(importlib.import_module(module), cls)(store)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{spec} ({exc})")
            continue
        registry.register(collector)
    return registry, missing


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("exporter: " + format, *args)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class ExporterServer:
    def __init__(self, store, host: str, port: int) -> None:
        self.registry, self.missing = build_registry(store)
        for m in self.missing:
            log.info("exporter: collector not loaded: %s", m)
        self.host, self.port = host, port
        self._httpd = None

    def start(self) -> None:
        self._httpd = make_server(self.host, self.port, make_wsgi_app(self.registry), _ThreadingWSGIServer,
                                  handler_class=_QuietHandler)
        self.port = self._httpd.server_port
        threading.Thread(target=self._httpd.serve_forever, name="exporter", daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
