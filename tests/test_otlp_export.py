"""Traces out: the agent's requests as OTLP traces, received by a collector built on `opentelemetry-proto`
(GenAI attributes, phases as child spans, the diagnosis' budget as attributes, incidents as span events), and a
collector that is away: batches dropped and counted, the agent unaffected."""
from __future__ import annotations

import shutil
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.harness import free_port, run_agent, wait_for, write_config
from gpusleuth.agent.store import Store
from gpusleuth.exporters.otlp_spans import attributes
from gpusleuth.exporters.otlp_traces import TraceExporter
from gpusleuth.probes.otlp.decode import attributes as read_attributes
from gpusleuth.probes.records import Event, monotonic_ns, wall_offset_ns
from gpusleuth.probes.spans.synthetic import request_spans, send_spans
from tests.agent_helpers import exporter_port


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: every POST /v1/traces parsed as an ExportTraceServiceRequest."""

    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(h):  # noqa: N802, N805
                msg = ExportTraceServiceRequest()
                msg.ParseFromString(h.rfile.read(int(h.headers["Content-Length"])))
                self.requests.append(msg)
                h.send_response(200)
                h.send_header("Content-Length", "0")
                h.end_headers()

            def log_message(h, *a):  # noqa: N805
                pass
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def spans(self) -> list:
        return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def roots_by_request(collector: Collector) -> dict[str, tuple]:
    """request id -> (root span, its attributes, its child spans)."""
    spans = collector.spans()
    out = {}
    for s in spans:
        if not s.parent_span_id:
            attrs = read_attributes(s.attributes)
            out[attrs["gen_ai.request.id"]] = (s, attrs, [c for c in spans if c.parent_span_id == s.span_id])
    return out


@pytest.mark.root
def test_the_agent_exports_each_request_as_a_trace_and_survives_a_missing_collector():
    collector = Collector()
    tmp = Path(tempfile.mkdtemp(prefix="gpusleuth-export-"))
    dead = f"http://127.0.0.1:{free_port()}"
    sent: dict[str, int] = {}
    try:
        for endpoint in (collector.url, dead):
            config = write_config(tmp, ["spans"], extra=f'\n[probes.spans]\nsocket = "{tmp}/spans.sock"\n')
            config.write_text(config.read_text().replace("[exporter]\n", f'[exporter]\notlp_traces_endpoint = '
                                                                         f'"{endpoint}"\n'))
            assert run_agent("--config", str(config), "start").returncode == 0, endpoint
            try:
                t = sent[endpoint] = monotonic_ns()
                send_spans(str(tmp / "spans.sock"), [s for i in range(8) for s in request_spans(
                    f"req-{i}", t + i * 50_000_000, 0.005, 0.01, 0.04, output_tokens=9)])
                with ControlClient(str(tmp / "agent.sock")) as client:
                    if endpoint == collector.url:
                        wait_for(lambda: len(roots_by_request(collector)) == 8, timeout=30)
                    else:
                        metrics = f"http://127.0.0.1:{exporter_port(config)}/metrics"
                        wait_for(lambda: 'gpusleuth_otlp_export_dropped_spans_total{reason="unreachable"} 32.0' in
                                 urllib.request.urlopen(metrics, timeout=5).read().decode(), timeout=30)
                        assert len(client.call("requests")) == 8 and client.call("status")["probes"]["spans"][
                            "state"] == "ok"  # unaffected
                        snap = client.call("snapshot", sources=["otlp_export"])["otlp_export"]
                        assert snap["exported_spans_total"] == 0 and "refused" in snap["last_error"].lower()
            finally:
                run_agent("--config", str(config), "stop")
    finally:
        collector.close()
        shutil.rmtree(tmp, ignore_errors=True)
    roots = roots_by_request(collector)
    root, attrs, children = roots["req-3"]
    assert root.kind == root.SPAN_KIND_SERVER and root.name == "text_completion"
    assert [c.name for c in sorted(children, key=lambda c: c.start_time_unix_nano)] == ["queued", "prefill", "decode"]
    assert all(c.trace_id == root.trace_id for c in children)
    assert attrs["gen_ai.usage.input_tokens"] == 100 and attrs["gen_ai.usage.output_tokens"] == 9
    assert attrs["gen_ai.latency.e2e"] == pytest.approx(0.055, abs=1e-6)
    assert attrs["gpusleuth.budget.actual_ms"] == pytest.approx(55.0, abs=0.01)  # diagnosed before it left
    assert {"gpusleuth.budget.expected_ms", "gpusleuth.budget.excess_ms", "gpusleuth.verdict.is_likely"} <= set(attrs)
    start = sent[collector.url] + 3 * 50_000_000 + wall_offset_ns()
    assert abs(root.start_time_unix_nano - start) < 5_000_000  # monotonic -> wall with the agent's offset
    assert root.end_time_unix_nano - root.start_time_unix_nano == 55_000_000


def test_incidents_of_the_engine_become_span_events(tmp_path):
    collector = Collector()
    store = Store(8 << 20)
    exporter = TraceExporter(store, collector.url, diagnosis=None)
    t = monotonic_ns()
    store.add(events=[
        Event("request.queued", "spans", t, t + 10_000_000, pid=4242, attrs={"request_id": "r1", "tokens": 5}),
        Event("request.decode", "spans", t + 10_000_000, t + 90_000_000, pid=4242, attrs={"request_id": "r1"}),
        Event("request.finished", "spans", t + 90_000_000, t + 90_000_000, pid=4242,
              attrs={"request_id": "r1", "tokens": 3, "status": "error", "e2e_s": 0.09}),
        Event("incident", "diagnosis", t + 20_000_000, t + 20_000_000, pid=4242, attrs={
            "id": "inc-1", "cause": "process_frozen", "engine_pid": 4242, "onset_ns": t + 20_000_000,
            "last_ns": t + 60_000_000, "evidence": "stopped 40 ms", "culprit": {"pid": 4242, "comm": "vllm"}}),
        Event("incident", "diagnosis", t, t, pid=1, attrs={"id": "inc-2", "cause": "softirq", "engine_pid": 1,
                                                            "onset_ns": t, "last_ns": t + 1})])
    try:
        exporter.tick(monotonic_ns())
        (root, attrs, children), = roots_by_request(collector).values()
    finally:
        collector.close()
    assert [e.name for e in root.events] == ["gpusleuth.incident"]  # only its own engine's
    ev = read_attributes(root.events[0].attributes)
    assert ev["gpusleuth.incident.cause"] == "process_frozen" and ev["gpusleuth.incident.culprit.comm"] == "vllm"
    assert root.status.code == root.status.STATUS_CODE_ERROR and attrs["process.pid"] == 4242
    assert "gpusleuth.budget.excess_ms" not in attrs  # no diagnosis: no budget claimed
    assert store.snapshot("otlp_export")["exported_spans_total"] == 3
    assert read_attributes(attributes({"a": 1, "b": None})) == {"a": 1}
