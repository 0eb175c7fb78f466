"""The /metrics body, rendered off the request path: a scrape returns bytes rendered at most one interval ago.

Why not prometheus_client's own WSGI app: it renders the registry inside every scrape. Rendering takes the
interpreter lock for as long as it runs (0.4 s median at 16k samples on the 2-core CPU box), and span intake, the
probes and the diagnosis wait behind it; two scrapers (Prometheus and a person's curl) render twice. Here one
thread renders each format that was asked for in the last minute, once per `interval_s`, gzipped as well when a
scraper asked for gzip; prometheus_client still does the rendering (`choose_encoder`), only when and how often
changes. A scrape of a format nobody asked for lately renders once, then joins the cycle.
"""
from __future__ import annotations

import gzip
import logging
import threading
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)
KEEP_RENDERING_S = 60.0  # a format keeps being rendered this long after its last scrape


@dataclass(slots=True)
class Body:
    content_type: str
    raw: bytes
    rendered_at: float
    render_s: float
    gzipped: bytes | None = None


class Exposition:
    """Rendered exposition per format (text, OpenMetrics), refreshed by a background thread."""

    def __init__(self, registry: CollectorRegistry, interval_s: float = 1.0) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self.renders = 0
        self.last_render_s = 0.0
        self._bodies: dict[str, Body] = {}  # the Accept header's chosen content type -> body
        self._asked: dict[tuple[str, bool], float] = {}  # (accept header, gzip) -> when last asked
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()  # one render at a time (a scrape's first render vs the thread)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="exporter-render", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def body(self, accept: str, is_gzip: bool) -> tuple[str, bytes, bool]:
        """(content type, bytes, whether gzipped) for a scrape with this Accept header."""
        now = time.monotonic()
        with self._lock:
            self._asked[(accept, is_gzip)] = now
            _, content_type = choose_encoder(accept)
            body = self._bodies.get(content_type)
        if body is None or now - body.rendered_at > 2 * self.interval_s:  # first ask, or the thread fell behind
            body = self._render(accept)
        if is_gzip:
            if body.gzipped is None:
                body.gzipped = gzip.compress(body.raw, compresslevel=1)
            return body.content_type, body.gzipped, True
        return body.content_type, body.raw, False

    def _render(self, accept: str) -> Body:
        encoder, content_type = choose_encoder(accept)
        with self._render_lock:
            t0 = time.perf_counter()
            raw = encoder(self.registry)
            dt = time.perf_counter() - t0
            body = Body(content_type, raw, time.monotonic(), dt)
            self.renders += 1
            self.last_render_s = dt
        with self._lock:
            self._bodies[content_type] = body
        return body

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            with self._lock:
                self._asked = {k: t for k, t in self._asked.items() if now - t < KEEP_RENDERING_S}
                wanted = dict(self._asked)
            done: set[str] = set()
            for (accept, is_gzip), _ in sorted(wanted.items()):
                _, content_type = choose_encoder(accept)
                try:
                    if content_type not in done:
                        body = self._render(accept)
                        done.add(content_type)
                    else:
                        body = self._bodies[content_type]
                    if is_gzip and body.gzipped is None:
                        body.gzipped = gzip.compress(body.raw, compresslevel=1)
                except Exception:  # a collector bug: the last good body stays; the next interval tries again
                    log.exception("exporter: rendering /metrics failed")
