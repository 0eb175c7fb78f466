"""Engine spans into the real agent: intake, request histograms, auto-watch, and `explain` naming the cause."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.harness import run_agent, wait_for, write_config
from gpusleuth.probes import snapshot_codec
from tests.agent_helpers import spawn_python

pytestmark = pytest.mark.root

# A fake engine that speaks the real span protocol: one request whose prefill phase contains a stalled syscall on
# the "scheduler" thread (fsync of freshly written data), plus an ordinary wait (a sleep) that must not be blamed.
ENGINE = """
import os, sys, time
from gpusleuth.probes.spans.wire import Span, encode
import socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
path = sys.argv[1]
def send(*spans):
    sock.sendto(encode(os.getpid(), list(spans)), path)
now = time.monotonic_ns
t = now()
send(Span("step", "step", "step-0", 0, t, t, 0, 0))
print("hello", flush=True)
sys.stdin.readline()             # the test waits until the agent watches us
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
for _ in range(64):              # dirty page cache for the fsync to flush, before the request arrives
    os.write(fd, os.urandom(1 << 20))
arrival = now()
time.sleep(0.005)
sched = now()
send(Span("request", "queued", "req-1", 0, arrival, sched, 12, 1))
time.sleep(0.03)                 # an idle wait: never the verdict
t_sync = now()
os.fsync(fd)                     # the stall, inside prefill
fsync_ms = (now() - t_sync) / 1e6
os.close(fd)
first = now()
send(Span("request", "prefill", "req-1", 0, sched, first, 12, 1))
time.sleep(0.002)
end = now()
send(Span("request", "decode", "req-1", 0, first, end, 3, 1),
     Span("request", "finished", "req-1", 0, end, end, 4, 0,
          {"ttft_s": (first - arrival) / 1e9, "tpot_s": (end - first) / 3e9, "e2e_s": (end - arrival) / 1e9,
           "status": "stop"}))
print("sent", fsync_ms, flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def agent():
    tmp = Path(tempfile.mkdtemp(prefix="gpusleuth-spans-"))
    config = write_config(tmp, ["syscalls", "sched", "spans"],
                          extra=f'\n[probes.spans]\nsocket = "{tmp}/spans.sock"\n'
                                '\n[probes.syscalls]\nslow_threshold_ms = 20.0\n')
    assert run_agent("--config", str(config), "start").returncode == 0
    client = ControlClient(str(tmp / "agent.sock"))
    yield tmp, client
    client.close()
    run_agent("--config", str(config), "stop")
    shutil.rmtree(tmp, ignore_errors=True)


def test_span_sender_is_watched_and_explain_names_the_syscall(agent):
    tmp, client = agent
    engine = spawn_python(ENGINE.replace("sys.argv[1]", repr(str(tmp / "spans.sock")))
                          .replace("sys.argv[2]", repr(str(tmp / "stall.bin"))))
    try:
        assert engine.stdout.readline().strip() == "hello"
        wait_for(lambda: engine.pid in client.call("status")["watched_pids"], timeout=10)
        engine.stdin.write("go\n")
        engine.stdin.flush()
        word, fsync_ms = engine.stdout.readline().split()
        assert word == "sent"
        if float(fsync_ms) < 25:
            pytest.skip(f"fsync of 64 MiB took only {float(fsync_ms):.1f} ms here: below the 20 ms slow threshold")
        rows = wait_for(lambda: [r for r in client.call("requests") if r["request_id"] == "req-1"], timeout=10)
        # the syscall probe polls every second: wait until the slow syscall is in the store too
        wait_for(lambda: [e for e in client.call("events", kinds=["slow_syscall"], pid=engine.pid)
                          if e["attrs"]["syscall"] == "fsync"], timeout=10)
        report = client.call("explain", request_id="req-1")
    finally:
        engine.kill()
        engine.wait()
    row = rows[0]
    assert row["pid"] == engine.pid and row["prompt_tokens"] == 12 and row["output_tokens"] == 4
    assert row["ttft_s"] >= 0.03 + float(fsync_ms) / 1e3
    assert {p["phase"] for p in report["phases"]} == {"queued", "prefill", "decode"}
    top = report["verdicts"][0]
    assert top["cause"] == "syscall", report["verdicts"]
    assert "fsync" in top["evidence"] and "nanosleep" not in top["evidence"]
    assert top["score"] > 0.3
    assert top["runbook"].endswith(".md") and Path(top["runbook"]).is_file()
    shown = {e["attrs"].get("syscall") for e in report["overlapping"] if e["kind"] == "slow_syscall"}
    assert "fsync" in shown and "nanosleep" not in shown  # idle waits are counted, not listed
    assert report["idle_waits_hidden"] >= 1

    snap = snapshot_codec.decode("spans", client.call("snapshot", sources=["spans"])["spans"])
    ttft = snap.histograms[engine.pid]["ttft"]
    assert ttft.count == 1 and abs(ttft.sum - row["ttft_s"]) < 1e-9
    assert snap.watch_pids == [engine.pid] and snap.senders[engine.pid].spans == 5  # step, queued .. finished


def test_malformed_datagrams_are_counted_not_fatal(agent):
    import socket
    tmp, client = agent
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for payload in (b"not json", b'{"v": 99}', b'{"v":1,"pid":1,"spans":[{"kind":"request"}]}'):
        sock.sendto(payload, str(tmp / "spans.sock"))
    def spans():
        return snapshot_codec.decode("spans", client.call("snapshot", sources=["spans"])["spans"])
    snap = wait_for(lambda: (s := spans()).decode_errors_total == 3 and s, timeout=10)
    assert snap.spans_total == 0
    assert client.call("status")["probes"]["spans"]["state"] == "ok"
    assert os.stat(tmp / "spans.sock").st_mode & 0o777 == 0o666


def test_requests_evicted_unfinished_are_counted_and_exported(tmp_path):
    from prometheus_client import CollectorRegistry

    from gpusleuth.agent.store import Store
    from gpusleuth.exporters.requests import RequestCollector
    from gpusleuth.probes.records import monotonic_ns
    from gpusleuth.probes.spans.probe import SpanConfig, SpanProbe
    from gpusleuth.probes.spans.requests import RequestBook
    from gpusleuth.probes.spans.synthetic import request_spans, send_spans

    probe = SpanProbe(SpanConfig(socket=str(tmp_path / "spans.sock")))
    probe.book = RequestBook(max_recent=10, max_in_flight=2)  # an engine that never finishes its requests
    probe.start()
    try:
        t = monotonic_ns()
        send_spans(probe.config.socket, [request_spans(f"r{i}", t, 0.01, 0.01, 0.01)[0] for i in range(3)])
        snap = wait_for(lambda: (s := probe.poll(monotonic_ns()).snapshot).evicted_in_flight and s, timeout=10)
    finally:
        probe.stop()
    assert (snap.evicted_in_flight, snap.in_flight, snap.finished_total) == (1, 2, 0)  # the oldest was forgotten
    store = Store(8 << 20)
    store.set_snapshot("spans", snap)
    registry = CollectorRegistry()
    registry.register(RequestCollector(store))
    assert registry.get_sample_value("gpusleuth_requests_evicted_in_flight_total", {}) == 1
    assert registry.get_sample_value("gpusleuth_requests_in_flight", {}) == 2
