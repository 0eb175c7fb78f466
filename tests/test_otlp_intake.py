"""OTLP intake against the exporters vLLM uses: request spans sent as vLLM sends them (the OpenTelemetry SDK, its
BatchSpanProcessor and OTLP exporter, vLLM's attribute names from vllm/tracing/utils.py) become the span intake's
request rows with vLLM's own durations, on the agent's clock, from the sending process."""
from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from gpusleuth.agent.harness import wait_for
from gpusleuth.probes.base import ProbeState, ProbeUnavailable
from gpusleuth.probes.config import ConfigError
from gpusleuth.probes.otlp import genai
from gpusleuth.probes.otlp.peer import PeerPids, resource_pid
from gpusleuth.probes.otlp.probe import OtlpConfig, OtlpProbe
from gpusleuth.probes.otlp.servers import Payload
from gpusleuth.probes.records import monotonic_ns, wall_offset_ns
from gpusleuth.probes.spans.probe import SpanConfig, SpanProbe

# A vLLM-like frontend: vllm/tracing/otel.py's init_tracer (TracerProvider, a resource naming vllm.process_id,
# BatchSpanProcessor, the OTLP exporter for $OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, grpc by default) and
# output_processor.do_tracing (one SERVER span `llm_request` from the arrival's wall time, ended at once, with
# queue/prefill/decode from monotonic timestamps). argv: endpoint, protocol, the resource's process id, request
# count, and a file. Prints its pid, then `done` once every span is exported, and waits for a line on stdin: `slow`
# sends one more request whose input processing fsyncs freshly written data (to the file), then waits for another.
EMITTER = r"""
import os, sys, time
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
endpoint, protocol, resource_pid, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=endpoint)
provider = TracerProvider(resource=Resource.create({"vllm.instrumenting_module_name": "vllm.llm_engine",
                                                    "vllm.process_id": resource_pid}))
provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
tracer = provider.get_tracer("vllm.llm_engine")
def busy(ms):
    end = time.monotonic() + ms / 1e3
    while time.monotonic() < end:
        pass
def request(rid, stall=None):
    arrival = time.time()
    busy(2)                          # input processing in the frontend
    if stall:
        stall()
    queued = time.monotonic(); busy(1)
    scheduled = time.monotonic(); busy(4)
    first = time.monotonic(); first_wall = time.time(); busy(8)
    last = time.monotonic(); busy(0.5)
    attrs = {"gen_ai.latency.time_to_first_token": first_wall - arrival, "gen_ai.latency.e2e": time.time() - arrival,
             "gen_ai.latency.time_in_queue": scheduled - queued, "gen_ai.usage.prompt_tokens": 12,
             "gen_ai.usage.completion_tokens": 9, "gen_ai.latency.time_in_model_prefill": first - scheduled,
             "gen_ai.latency.time_in_model_decode": last - first,
             "gen_ai.latency.time_in_model_inference": last - scheduled, "gen_ai.request.id": rid,
             "gen_ai.request.max_tokens": 9}
    span = tracer.start_span("llm_request", kind=SpanKind.SERVER, start_time=int(arrival * 1e9), attributes=attrs)
    span.end()
    time.sleep(0.01)
print(os.getpid(), flush=True)
for i in range(count):
    request(f"cmpl-{i}")
provider.force_flush()
print("done", flush=True)
if sys.stdin.readline().strip() == "slow":
    fd = os.open(sys.argv[5], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for _ in range(128):             # dirty page cache for the fsync to flush
        os.write(fd, os.urandom(1 << 20))
    took = []
    def stall():
        t = time.monotonic()
        os.fsync(fd)
        took.append((time.monotonic() - t) * 1e3)
    request("cmpl-slow", stall)
    os.close(fd)
    provider.force_flush()
    print("sent", took[0], flush=True)
    sys.stdin.readline()
provider.shutdown()
"""


def emit(endpoint: str, protocol: str, resource_pid: str, count: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", EMITTER, endpoint, protocol, resource_pid, str(count), *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


@pytest.fixture
def intake(tmp_path):
    spans = SpanProbe(SpanConfig(socket=str(tmp_path / "spans.sock")))
    spans.start()
    otlp = OtlpProbe(OtlpConfig(http_listen="127.0.0.1:0", grpc_listen="127.0.0.1:0", span_socket=spans.config.socket))
    otlp.start()
    yield otlp, spans
    otlp.stop()
    spans.stop()


def _rows(otlp: OtlpProbe, spans: SpanProbe, n: int) -> list[dict]:
    def poll():
        otlp.poll(monotonic_ns())
        snap = spans.poll(monotonic_ns()).snapshot
        return snap.recent if len(snap.recent) >= n else None
    return wait_for(poll, timeout=20)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_vllm_request_spans_become_request_rows_of_the_sending_process(intake, protocol):
    otlp, spans = intake
    where = otlp.snap.grpc_listen if protocol == "grpc" else f"http://{otlp.snap.http_listen}/v1/traces"
    t0 = monotonic_ns()
    proc = emit(where, protocol, "1", 5)  # the resource names pid 1: the connection's owner must win
    try:
        pid = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "done"
        rows = _rows(otlp, spans, 5)
        watched = spans.poll(monotonic_ns()).snapshot.watch_pids
    finally:
        proc.communicate("exit\n", timeout=20)
    assert [r["request_id"] for r in rows] == [f"cmpl-{i}" for i in range(5)]
    for r in rows:
        assert r["pid"] == pid and r["prompt_tokens"] == 12 and r["output_tokens"] == 9
        assert 0.0009 <= r["queue_s"] < 0.2 and 0.0039 <= r["prefill_s"] < 0.3 and 0.0079 <= r["decode_s"] < 0.3
        assert r["received_s"] >= 0.0019  # TTFT beyond queue and prefill: the frontend's input processing
        assert abs(r["ttft_s"] - (r["received_s"] + r["queue_s"] + r["prefill_s"])) < 0.002
        assert abs((r["end_ns"] - r["start_ns"]) / 1e9 - r["e2e_s"]) < 0.002
        assert t0 < r["start_ns"] < r["end_ns"] < monotonic_ns()  # on the agent's clock
        assert r["tpot_s"] == pytest.approx(r["decode_s"] / 8, rel=1e-6)
    snap = otlp.poll(monotonic_ns()).snapshot
    assert snap.senders[pid].joined_by == "peer" and snap.senders[pid].requests == 5
    assert snap.requests_total == 5 and snap.decode_errors_total == 0
    assert watched == [pid]  # the kernel probes will watch it


def _json_body(resource_pid: int, start_wall: int) -> bytes:
    """OTLP/JSON as the specification writes it: hex ids, string int64s, camelCase keys."""
    attrs = [{"key": "gen_ai.request.id", "value": {"stringValue": "json-1"}},
             {"key": "gen_ai.latency.time_to_first_token", "value": {"doubleValue": 0.05}},
             {"key": "gen_ai.latency.time_in_queue", "value": {"doubleValue": 0.01}},
             {"key": "gen_ai.latency.time_in_model_prefill", "value": {"doubleValue": 0.03}},
             {"key": "gen_ai.latency.time_in_model_decode", "value": {"doubleValue": 0.04}},
             {"key": "gen_ai.usage.completion_tokens", "value": {"intValue": "5"}}]
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "llm_request",
            "kind": 2, "startTimeUnixNano": str(start_wall), "endTimeUnixNano": str(start_wall + 100_000_000),
            "attributes": attrs}
    loading = {**span, "spanId": "eee19b7ec3c1b175", "name": "Load weights", "attributes": []}
    return json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "process.pid", "value": {"intValue": str(resource_pid)}}]},
        "scopeSpans": [{"spans": [span, loading]}]}]}).encode()


def test_otlp_json_over_http_gzip_and_the_resource_pid_when_no_local_peer(intake):
    otlp, spans = intake
    start_wall = time.time_ns() - 200_000_000
    body = gzip.compress(_json_body(4242, start_wall))
    req = urllib.request.Request(f"http://{otlp.snap.http_listen}/v1/traces", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
    row = _rows(otlp, spans, 1)[0]
    assert row["pid"] != 4242  # sent from this process: the connection names it
    # a payload whose connection names no local process (a remote sender) is joined by its resource
    assert otlp._sink(Payload("json", _json_body(4242, start_wall), None, "http"))
    otlp.poll(monotonic_ns())
    snap = wait_for(lambda: (s := spans.poll(monotonic_ns()).snapshot).finished_total >= 1 and
                    any(r["pid"] == 4242 for r in s.recent) and s)
    remote = next(r for r in snap.recent if r["pid"] == 4242)
    assert (remote["queue_s"], remote["prefill_s"], remote["decode_s"]) == (0.01, 0.03, 0.04)
    assert remote["received_s"] == pytest.approx(0.01)
    assert abs(remote["start_ns"] - (start_wall - wall_offset_ns())) < 5_000_000  # wall -> monotonic
    osnap = otlp.poll(monotonic_ns()).snapshot
    assert osnap.other_spans_total == 2 and osnap.senders[4242].joined_by == "resource"


def test_malformed_payloads_are_counted_and_the_probe_stays_up(intake):
    otlp, _ = intake
    for ctype, body in (("application/x-protobuf", b"\xff\xff\xff"), ("application/json", b"{not json")):
        req = urllib.request.Request(f"http://{otlp.snap.http_listen}/v1/traces", data=body, method="POST",
                                     headers={"Content-Type": ctype})
        urllib.request.urlopen(req, timeout=5).close()
    wrong = urllib.request.Request(f"http://{otlp.snap.http_listen}/v1/metrics", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(wrong, timeout=5)
    assert err.value.code == 404
    snap = wait_for(lambda: (s := otlp.poll(monotonic_ns()).snapshot).decode_errors_total == 2 and s)
    assert snap.requests_total == 0 and otlp.status().state == ProbeState.OK


def test_span_intake_absent_is_counted_and_named(tmp_path):
    otlp = OtlpProbe(OtlpConfig(http_listen="127.0.0.1:0", grpc_listen="", span_socket=str(tmp_path / "none.sock")))
    otlp.start()
    try:
        assert otlp._sink(Payload("json", _json_body(4242, time.time_ns()), None, "http"))
        snap = otlp.poll(monotonic_ns()).snapshot
    finally:
        otlp.stop()
    assert snap.forward_errors_total == 1 and snap.requests_total == 1
    assert otlp.status().state == ProbeState.STOPPED
    otlp = OtlpProbe(OtlpConfig(http_listen="127.0.0.1:0", grpc_listen="", span_socket=str(tmp_path / "none.sock")))
    otlp.start()
    try:
        otlp._sink(Payload("json", _json_body(4242, time.time_ns()), None, "http"))
        otlp.poll(monotonic_ns())
        status = otlp.status()
    finally:
        otlp.stop()
    assert status.state == ProbeState.DEGRADED and "probes.otlp.span_socket" in status.reason


def test_taken_port_and_bad_listen_name_the_key():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = f"127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(ProbeUnavailable, match="probes.otlp.http_listen"):
            OtlpProbe(OtlpConfig(http_listen=taken, grpc_listen="")).start()
        probe = OtlpProbe(OtlpConfig(http_listen="127.0.0.1:0", grpc_listen=taken))
        probe.start()
        try:
            assert probe.status().state == ProbeState.DEGRADED and "grpc_listen" in probe.status().reason
        finally:
            probe.stop()
    with pytest.raises(ConfigError, match="http_listen"):
        OtlpConfig(http_listen="localhost")


def test_phases_tile_the_span_and_resource_pids():
    start, end = 1_000_000_000, 1_100_000_000
    attrs = {genai.TTFT: 0.05, genai.QUEUE: 0.01, genai.PREFILL: 0.03, genai.DECODE: 0.045,
             genai.COMPLETION_TOKENS: 10, genai.REQUEST_ID: "r"}
    got = genai.request_spans("llm_request", attrs, start, end)
    assert [(s.phase, s.start_ns, s.end_ns) for s in got] == [
        ("received", start, start + 10_000_000), ("queued", start + 10_000_000, start + 20_000_000),
        ("prefill", start + 20_000_000, start + 50_000_000), ("decode", start + 50_000_000, start + 95_000_000),
        ("stream", start + 95_000_000, end), ("finished", end, end)]
    # decode longer than the span allows (another clock): clamped to the span's end, no stream
    late = genai.request_spans("llm_request", {**attrs, genai.DECODE: 0.2}, start, end)
    assert late[3].end_ns == end and [s.phase for s in late][-2:] == ["decode", "finished"]
    assert genai.request_spans("Load weights", {}, start, end) is None  # not a request
    assert genai.request_spans("llm_request", {genai.E2E: 0.1}, start, end) is None  # nothing to split
    assert resource_pid({"process.pid": 7}) == 7 and resource_pid({"vllm.process_id": "8"}) == 8
    assert resource_pid({"service.instance.id": "a1b2"}) is None
    assert PeerPids().lookup("203.0.113.5", 40000, 4318) is None  # not a local address: no host scan
