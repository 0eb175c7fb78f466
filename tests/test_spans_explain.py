"""Engine spans into the real agent: intake, request histograms, auto-watch, and `explain` (the control method and
the `agent explain` command) naming the cause of a slow request from a budget against its engine's baseline."""
from __future__ import annotations

import json
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

# A fake engine that speaks the real span protocol (diagnosis contract §1) from one thread, its "step thread": 40
# ordinary requests (a prefill step and 10 decode steps of busy work each, an idle wait between requests), then one
# whose 5th decode step fsyncs freshly written data: a stall on the step thread's own path, in a syscall. Waits for
# work (the idle sleeps) must never be blamed.
ENGINE = """
import os, sys, threading, time
from gpusleuth.probes.spans.wire import Span, encode
import socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
path = sys.argv[1]
now = time.monotonic_ns
tid = threading.get_native_id()
n = [0]
def send(*spans):
    sock.sendto(encode(os.getpid(), list(spans)), path)
def busy(ms):
    end = now() + int(ms * 1e6)
    while now() < end:
        pass
def step(rid, prefill, work):
    n[0] += 1
    a = now()
    work()
    send(Span("step", "step", f"step-{n[0]}", 0, a, now(), 1, 1, {"tid": tid, "step_id": n[0],
         "num_decode": 0 if prefill else 1, "num_prefill": 1 if prefill else 0,
         "num_prefill_tokens": 12 if prefill else 0, "request_ids": [rid], "num_running": 1, "num_waiting": 0,
         "kv_usage": 0.1}))
def request(rid, slow=None):
    a = now()
    send(Span("request", "received", rid, 0, a - 100_000, a))
    q = now()
    send(Span("request", "queued", rid, 0, a, q, 12, 1))
    step(rid, True, lambda: busy(3))
    first = now()
    send(Span("request", "prefill", rid, 0, q, first, 12, 1))
    for k in range(10):
        step(rid, False, slow if slow and k == 4 else lambda: busy(2))
    end = now()
    send(Span("request", "decode", rid, 0, first, end, 10, 1),
         Span("request", "stream", rid, 0, end, end + 50_000),
         Span("request", "finished", rid, 0, end + 50_000, end + 50_000, 11, 0,
              {"ttft_s": (first - a) / 1e9, "tpot_s": (end - first) / 10e9, "e2e_s": (end - a) / 1e9,
               "status": "stop"}))
    i = now()
    time.sleep(0.03)  # waiting for the next request: an idle wait (a slow syscall too), sent as such
    send(Span("step", "idle", "idle", 0, i, now(), 0, 0, {"tid": tid}))
send(Span("step", "heartbeat", "heartbeat", 0, now(), now(), 0, 0, {"num_in_flight": 0, "tid": tid}))
print("hello", flush=True)
sys.stdin.readline()             # the test waits until the agent watches us
for r in range(40):
    request(f"warm-{r}")
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
for _ in range(128):             # dirty page cache for the fsync to flush
    os.write(fd, os.urandom(1 << 20))
took = []
def stall():
    t = now()
    os.fsync(fd)
    took.append((now() - t) / 1e6)
request("req-slow", stall)
os.close(fd)
print("sent", took[0], flush=True)
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
    yield tmp, client, config
    client.close()
    run_agent("--config", str(config), "stop")
    shutil.rmtree(tmp, ignore_errors=True)


def test_span_sender_is_watched_and_explain_names_the_stall_on_the_step_thread(agent):
    tmp, client, config = agent
    engine = spawn_python(ENGINE.replace("sys.argv[1]", repr(str(tmp / "spans.sock")))
                          .replace("sys.argv[2]", repr(str(tmp / "stall.bin"))))
    try:
        assert engine.stdout.readline().strip() == "hello"
        wait_for(lambda: engine.pid in client.call("status")["watched_pids"], timeout=10)
        engine.stdin.write("go\n")
        engine.stdin.flush()
        word, fsync_ms = engine.stdout.readline().split()
        assert word == "sent"
        if float(fsync_ms) < 40:
            pytest.skip(f"fsync of 128 MiB took only {float(fsync_ms):.1f} ms here: not much of a stall")
        rows = wait_for(lambda: [r for r in client.call("requests") if r["request_id"] == "req-slow"], timeout=10)
        # diagnosed once the kernel probes' evidence of its time is in (they poll every second)
        wait_for(lambda: any(d["request_id"] == "req-slow" for d in client.call("diagnoses")), timeout=10)
        report = client.call("explain", request_id="req-slow")
        idle_sleeps = client.call("events", kinds=["slow_syscall"], pid=engine.pid, limit=10000)
        slowest = client.call("diagnoses", slowest=3)  # a busy box can make a warm-up request slow too
        cli = run_agent("--config", str(config), "explain", "req-slow")
        cli_json = run_agent("--config", str(config), "explain", "--slowest", "3", "--json")
        window = run_agent("--config", str(config), "explain", "--window", "5m", "--min-excess-ms", "20", "--json")
        missing = run_agent("--config", str(config), "explain", "no-such-request")
    finally:
        engine.kill()
        engine.wait()
    row = rows[0]
    assert row["pid"] == engine.pid and row["prompt_tokens"] == 12 and row["output_tokens"] == 11
    parts = {p["part"]: p for p in report["budget"]["parts"]}
    assert set(parts) == {"arrival", "queue", "prefill", "decode", "stream"}
    assert parts["decode"]["steps"] == 10 and parts["decode"]["baseline"] == "shape"
    assert parts["decode"]["excess_ms"] >= 0.6 * float(fsync_ms)  # the stall is excess over ~20 ms of steps
    top = report["verdicts"][0]
    assert top["cause"] == "blocking_io", report["verdicts"]
    assert top["culprit"]["pid"] == engine.pid and top["culprit"]["tid"] == engine.pid  # the step thread
    assert top["culprit"]["syscall"] in ("fsync", "(D state)") and top["is_likely"]
    assert top["share"] >= 0.5 and "nanosleep" not in top["evidence"]
    assert top["runbook"].endswith("blocking-io.md") and Path(top["runbook"]).is_file()
    assert abs(sum(v["explained_ms"] for v in report["verdicts"]) + report["unexplained_ms"]
               - report["budget"]["excess_ms"]) < 0.05
    assert any(e["attrs"]["syscall"] in ("nanosleep", "clock_nanosleep") for e in idle_sleeps)  # there were some
    assert not any(e["attrs"].get("syscall") in ("nanosleep", "clock_nanosleep") for e in report["overlapping"])
    assert {"request_id": "req-slow", "cause": "blocking_io"}.items() <= next(
        d for d in slowest if d["request_id"] == "req-slow").items()
    assert cli.returncode == 0 and "blocking_io" in cli.stdout and "unexplained" in cli.stdout, cli.stderr
    got = {r["request"]["request_id"]: r for r in json.loads(cli_json.stdout)}
    assert got["req-slow"]["verdicts"][0]["cause"] == "blocking_io"
    slow = json.loads(window.stdout)
    mine = [r for r in slow["requests"] if r["request_id"] == "req-slow"]
    assert mine and mine[0]["cause"] == "blocking_io" and slow["causes"].get("blocking_io", 0) >= 1, slow
    assert all(r["excess_ms"] >= 20 for r in slow["requests"])
    assert missing.returncode == 1 and "no-such-request" in missing.stdout

    snap = snapshot_codec.decode("spans", client.call("snapshot", sources=["spans"])["spans"])
    ttft = snap.histograms[engine.pid]["ttft"]
    assert ttft.count == 41 and snap.watch_pids == [engine.pid]
    diag = client.call("snapshot", sources=["diagnosis"])["diagnosis"]
    assert diag["engines"][str(engine.pid)]["step_tids"] == {"0": engine.pid} and diag["diagnosed_total"] == 41


def test_malformed_datagrams_are_counted_not_fatal(agent):
    import socket
    tmp, client, _ = agent
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
