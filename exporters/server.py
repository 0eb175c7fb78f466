"""The agent's /metrics endpoint: a fresh registry with every available collector, served by prometheus_client.

prometheus_client's server picks the address family from the listen address, so `[::1]:9464` works as well as
`127.0.0.1:9464`, and it serves the OpenMetrics format to scrapers that ask for it.
"""
from __future__ import annotations

import importlib
import logging

from prometheus_client import CollectorRegistry, start_http_server

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


class ExporterServer:
    """Serves the collectors over HTTP in a background thread; a service the agent starts and stops."""

    name = "exporter"

    def __init__(self, store, host: str, port: int) -> None:
        self.registry, self.missing = build_registry(store)
        for m in self.missing:
            log.info("exporter: collector not loaded: %s", m)
        self.host, self.port = host, port
        self._httpd = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Listen now (OSError if the address is taken or not ours)."""
        self._httpd, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        self.port = self._httpd.server_port

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
