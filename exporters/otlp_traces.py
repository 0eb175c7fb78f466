"""Traces out: each finished request the agent saw leaves as an OTLP trace (exporters/otlp_spans.py) for a
collector at `exporter.otlp_traces_endpoint` (OTLP/HTTP protobuf, e.g. http://collector:4318; /v1/traces is added
when the URL has no path).

A service of the agent with its own thread, off every hot path: each second it takes the store's new request.* and
incident Events, waits for the diagnosis to have budgeted a finished request (at most `wait_s`), reads its summary
(and, for a request whose top verdict is likely, the full explain: its budget parts and verdicts), and sends
batches of at most `max_batch` spans. A collector that is away costs one failed POST per batch: the batch is
dropped and counted by reason, never retried, and spans beyond `max_queue` are dropped and counted too, so the
agent is unaffected. Its counters are the store's `otlp_export` snapshot (plain data), exported to Prometheus by
TraceExportCollector.
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Any, Iterator, Protocol
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from gpusleuth.exporters.base import SnapshotCollector
from gpusleuth.exporters.otlp_spans import FinishedRequest, resource_spans, trace_spans
from gpusleuth.probes.config import ConfigError
from gpusleuth.probes.records import Event, monotonic_ns, wall_offset_ns

log = logging.getLogger(__name__)
SNAPSHOT = "otlp_export"
MAX_EXPLAINS_PER_TICK = 20  # explain re-runs the detectors: only for likely-slow requests, and this many a second


class Diagnosis(Protocol):
    """What the exporter reads of the agent's diagnosis (agent/diagnosis/runner.py DiagnosisRunner)."""

    def diagnoses(self, since_ns: int | None = None) -> list[dict[str, Any]]: ...

    def explain(self, request_id: str, row: dict[str, Any] | None = None) -> dict[str, Any] | None: ...


def traces_url(endpoint: str) -> str:
    """The POST URL for a configured endpoint; ConfigError naming exporter.otlp_traces_endpoint if it is none."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("exporter.otlp_traces_endpoint", f"{endpoint!r} is not an http(s) URL like "
                                                           "http://127.0.0.1:4318")
    return endpoint if parts.path not in ("", "/") else endpoint.rstrip("/") + "/v1/traces"


class TraceExporter:
    """A service the agent starts and stops (agent/runtime.py Service)."""

    name = "otlp-traces"

    def __init__(self, store: Any, endpoint: str, diagnosis: Diagnosis | None = None, interval_s: float = 1.0,
                 wait_s: float = 5.0, max_batch: int = 512, max_queue: int = 20_000, timeout_s: float = 2.0) -> None:
        self.url = traces_url(endpoint)
        self.store, self.diagnosis = store, diagnosis
        self.interval_s, self.wait_ns, self.timeout_s = interval_s, int(wait_s * 1e9), timeout_s
        self.max_batch, self.max_queue = max_batch, max_queue
        self._cursor = 0
        self._open: dict[tuple[int, str], FinishedRequest] = {}
        self._done: deque[tuple[int, FinishedRequest]] = deque()  # (finished at, request), oldest first
        self._incidents: deque[dict] = deque(maxlen=1000)
        self._queue: deque = deque()
        self.stats = {"endpoint": self.url, "exported_spans_total": 0, "exported_requests_total": 0,
                      "dropped_spans_total": {}, "queued_spans": 0, "last_error": ""}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._cursor = self.store.events_since(0)[1]
        self._thread = threading.Thread(target=self._loop, name="otlp-traces", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s * 2 + 2)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick(monotonic_ns())
            except Exception:  # an exporter bug must not take the agent down: log once, keep going
                if not self.stats.get("errors"):
                    log.exception("trace export tick failed")
                self.stats["errors"] = self.stats.get("errors", 0) + 1

    def tick(self, now_ns: int) -> None:
        """Gather, build what is ready, send full batches (and the rest once a second)."""
        events, self._cursor = self.store.events_since(self._cursor)
        self._gather(events, now_ns)
        self._build_ready(now_ns)
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._send(batch)
        self.stats["queued_spans"] = len(self._queue)
        self.store.set_snapshot(SNAPSHOT, {**self.stats, "dropped_spans_total": dict(self.stats["dropped_spans_total"])})

    def _gather(self, events: list[Event], now_ns: int) -> None:
        for e in events:
            if e.kind == "incident":
                self._incidents.append(dict(e.attrs))
                continue
            if not e.kind.startswith("request."):
                continue
            phase, rid = e.kind[len("request."):], str(e.attrs.get("request_id"))
            req = self._open.setdefault((e.pid, rid), FinishedRequest(e.pid, rid, e.comm))
            if phase == "finished":
                req.finish = {**e.attrs, "_end_ns": e.end_ns}
                self._done.append((now_ns, self._open.pop((e.pid, rid))))
            else:
                lo, hi = req.phases.get(phase, (e.start_ns, e.end_ns))
                req.phases[phase] = (min(lo, e.start_ns), max(hi, e.end_ns))
                if phase == "queued" and e.attrs.get("tokens"):
                    req.prompt_tokens = int(e.attrs["tokens"])
        if len(self._open) > 100_000:  # requests that never finish: forget the oldest
            for key in list(self._open)[:10_000]:
                del self._open[key]

    def _build_ready(self, now_ns: int) -> None:
        if not self._done:
            return
        oldest = min(r.end_ns for _, r in self._done)
        summaries = {(d["pid"], d["request_id"]): d for d in
                     (self.diagnosis.diagnoses(oldest) if self.diagnosis is not None else [])}
        offset, explains = wall_offset_ns(), 0
        while self._done:
            seen_ns, req = self._done[0]
            summary = summaries.get((req.pid, req.request_id))
            if summary is None and self.diagnosis is not None and now_ns - seen_ns < self.wait_ns:
                break  # its evidence is not in yet (kernel probes poll every second)
            self._done.popleft()
            report = None
            if summary is not None and summary.get("is_likely") and explains < MAX_EXPLAINS_PER_TICK:
                report = self.diagnosis.explain(req.request_id)
                explains += 1
            overlapping = [i for i in self._incidents if int(i.get("engine_pid") or 0) == req.pid
                           and int(i.get("onset_ns") or 0) <= req.end_ns and int(i.get("last_ns") or 0) >= req.start_ns]
            self._enqueue(trace_spans(req, offset, summary, report, overlapping))
            self.stats["exported_requests_total"] += 1

    def _enqueue(self, spans: list) -> None:
        self._queue.extend(spans)
        over = len(self._queue) - self.max_queue
        if over > 0:
            for _ in range(over):
                self._queue.popleft()
            self._drop("queue_full", over)

    def _drop(self, reason: str, n: int) -> None:
        dropped = self.stats["dropped_spans_total"]
        dropped[reason] = dropped.get(reason, 0) + n

    def _send(self, batch: list) -> None:
        body = ExportTraceServiceRequest(resource_spans=[resource_spans(batch)]).SerializeToString()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-protobuf"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            self._drop(f"http_{exc.code}", len(batch))
            self.stats["last_error"] = f"{self.url} answered HTTP {exc.code}"
            return
        except (urllib.error.URLError, OSError) as exc:  # the collector is away: drop and count, never wait
            self._drop("unreachable", len(batch))
            self.stats["last_error"] = f"{self.url}: {getattr(exc, 'reason', exc)}"
            return
        self.stats["exported_spans_total"] += len(batch)


class TraceExportCollector(SnapshotCollector):
    """gpusleuth_otlp_export_spans_total, gpusleuth_otlp_export_dropped_spans_total{reason},
    gpusleuth_otlp_export_queued_spans (only while trace export is configured)."""

    source = SNAPSHOT

    def metrics(self, snap: dict[str, Any]) -> Iterator[Metric]:
        sent = CounterMetricFamily("gpusleuth_otlp_export_spans", "Spans the collector accepted")
        sent.add_metric([], snap.get("exported_spans_total", 0))
        yield sent
        dropped = CounterMetricFamily("gpusleuth_otlp_export_dropped_spans",
                                      "Spans dropped: collector unreachable or refusing, queue full", labels=["reason"])
        for reason, n in sorted((snap.get("dropped_spans_total") or {}).items()):
            dropped.add_metric([reason], n)
        yield dropped
        queued = GaugeMetricFamily("gpusleuth_otlp_export_queued_spans", "Spans waiting to be sent")
        queued.add_metric([], snap.get("queued_spans", 0))
        yield queued
