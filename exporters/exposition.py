"""The /metrics body, rendered off the request path: a scrape returns bytes rendered at most one interval ago.

Why not prometheus_client's own WSGI app: it renders the registry inside every scrape. Rendering takes the
interpreter lock for as long as it runs (0.4 s median at 16k samples on the 2-core CPU box), and span intake, the
probes and the diagnosis wait behind it; two scrapers (Prometheus and a person's curl) render twice. Here one
thread collects the registry once per `interval_s` and encodes it in each format asked for in the last minute
(text, OpenMetrics), gzipped as well when a scraper asked for gzip. prometheus_client still does the collecting and
the encoding (`choose_encoder`); only when and how often changes. A scrape of a format nobody asked for lately, or
one that finds the body older than MAX_AGE_INTERVALS, renders once itself.
"""
from __future__ import annotations

import gzip
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)
KEEP_RENDERING_S = 60.0  # a format keeps being rendered this long after its last scrape
MAX_AGE_INTERVALS = 3  # a body older than this many intervals is rendered again by the scrape that finds it


@dataclass(slots=True, frozen=True)
class Body:
    content_type: str
    raw: bytes
    gzipped: bytes | None
    rendered_at: float


class _Collected:
    """Families collected once, encoded in several formats (encoders only call `collect()`)."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


class Exposition:
    """Rendered exposition per format, refreshed by a background thread."""

    def __init__(self, registry: CollectorRegistry, interval_s: float = 1.0) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self.renders = 0
        self.last_render_s = 0.0
        self._bodies: dict[str, Body] = {}  # content type -> body
        self._asked: dict[str, tuple[Callable, bool, float]] = {}  # content type -> (encoder, gzip, when asked)
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()  # one render at a time
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
        encoder, content_type = choose_encoder(accept)
        now = time.monotonic()
        with self._lock:
            old = self._asked.get(content_type)
            self._asked[content_type] = (encoder, is_gzip or (old is not None and old[1]), now)
            body = self._bodies.get(content_type)
        if body is None or now - body.rendered_at > MAX_AGE_INTERVALS * self.interval_s or (
                is_gzip and body.gzipped is None):
            self._render({content_type: (encoder, is_gzip)})
            body = self._bodies[content_type]
        if is_gzip:
            return body.content_type, body.gzipped, True
        return body.content_type, body.raw, False

    def _render(self, wanted: dict[str, tuple[Callable, bool]]) -> None:
        with self._render_lock:
            t0 = time.perf_counter()
            collected = _Collected(list(self.registry.collect()))
            bodies = {}
            for content_type, (encoder, is_gzip) in wanted.items():
                raw = encoder(collected)
                bodies[content_type] = Body(content_type, raw, gzip.compress(raw, compresslevel=1) if is_gzip
                                            else None, time.monotonic())
            self.renders += 1
            self.last_render_s = time.perf_counter() - t0
        with self._lock:
            self._bodies.update(bodies)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            with self._lock:
                self._asked = {k: v for k, v in self._asked.items() if now - v[2] < KEEP_RENDERING_S}
                wanted = {k: (v[0], v[1]) for k, v in self._asked.items()}
            if not wanted:
                continue
            try:
                self._render(wanted)
            except Exception:  # a collector bug: the last good body stays; the next interval tries again
                log.exception("exporter: rendering /metrics failed")
