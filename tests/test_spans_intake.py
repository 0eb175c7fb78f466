"""The span intake with the phases of diagnosis contract §1, through a real SpanProbe on a real socket: in-flight
requests forgotten after the timeout or when their engine exits (counted by reason), late spans of finished requests
dropped, unknown phases skipped, engines that predate the new phases still understood, and the datagram split that
keeps agents of the first wire version working with newer engines.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from gpusleuth.agent.harness import wait_for
from gpusleuth.engine.spans import SpanEmitter
from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.spans import wire
from gpusleuth.probes.spans.probe import SpanConfig, SpanProbe
from gpusleuth.probes.spans.synthetic import request_spans, send_spans
from gpusleuth.probes.spans.wire import Span


@pytest.fixture
def probe(tmp_path):
    p = SpanProbe(SpanConfig(socket=str(tmp_path / "spans.sock"), in_flight_timeout_s=1.0))
    p.start()
    yield p
    p.stop()


def _poll_until(probe: SpanProbe, predicate, timeout: float = 10.0):
    def check():
        snap = probe.poll(time.monotonic_ns()).snapshot
        return snap if predicate(snap) else None

    return wait_for(check, timeout=timeout)


def _received(request_id: str, start_ns: int) -> Span:
    return Span("request", "received", request_id, 0, start_ns, start_ns + 1000, attrs={"tokenize_ms": 0.1})


def test_a_request_in_flight_past_the_timeout_is_forgotten_and_counted(probe):
    now = time.monotonic_ns()
    send_spans(probe.config.socket, [_received("stuck", now)])
    snap = _poll_until(probe, lambda s: s.in_flight == 1)
    assert snap.evicted_by_reason["timeout"] == 0
    time.sleep(0.7)
    send_spans(probe.config.socket, [_received("young", time.monotonic_ns())])
    snap = _poll_until(probe, lambda s: s.evicted_by_reason["timeout"] == 1, timeout=5)
    assert snap.in_flight == 1 and snap.evicted_in_flight == 1  # "young" stays
    assert time.monotonic_ns() - now >= 1e9


def test_in_flight_requests_of_an_engine_that_exits_are_forgotten(probe):
    code = f"""
import sys, time
from gpusleuth.probes.spans.synthetic import send_spans
from gpusleuth.probes.spans.wire import Span
now = time.monotonic_ns()
send_spans({probe.config.socket!r}, [Span("request", "received", "orphan", 0, now, now + 1000),
                                     Span("step", "heartbeat", "heartbeat", 0, now, now, attrs={{"num_in_flight": 1}})])
print("sent", flush=True)
sys.stdin.readline()
"""
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "sent"
        snap = _poll_until(probe, lambda s: s.in_flight == 1)
        assert child.pid in snap.watch_pids and snap.senders[child.pid].num_in_flight == 1
    finally:
        child.communicate("", timeout=30)
    snap = _poll_until(probe, lambda s: s.evicted_by_reason["exited"] == 1)
    assert snap.in_flight == 0 and child.pid not in snap.senders and child.pid not in snap.watch_pids


def test_late_spans_of_a_finished_request_are_dropped(probe):
    spans = request_spans("r1", time.monotonic_ns(), 0.001, 0.002, 0.003)
    send_spans(probe.config.socket, spans + [spans[2]])  # the decode phase again, after "finished"
    snap = _poll_until(probe, lambda s: s.late_spans_total == 1)
    assert (snap.in_flight, snap.finished_total) == (0, 1)


def test_engines_without_the_new_phases_still_give_rows(probe):
    send_spans(probe.config.socket, request_spans("old", time.monotonic_ns(), 0.01, 0.02, 0.03))
    snap = _poll_until(probe, lambda s: s.finished_total == 1)
    row = snap.recent[-1]
    assert (row["received_s"], row["stream_s"]) == (None, None)
    assert row["queue_s"] == pytest.approx(0.01, abs=1e-6) and row["e2e_s"] == pytest.approx(0.06, abs=1e-6)


def test_unknown_phases_are_skipped_and_counted(probe):
    now = time.monotonic_ns()
    data = json.dumps({"v": 1, "pid": 7, "spans": [
        {"kind": "step", "phase": "from-the-future", "request_id": "x", "rank": 0, "start_ns": now, "end_ns": now},
        _received("known", now).to_dict()]}).encode()
    batch = wire.decode_batch(data)
    assert ([s.phase for s in batch.spans], batch.num_unknown) == (["received"], 1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(data, probe.config.socket)
    snap = _poll_until(probe, lambda s: s.unknown_spans_total == 1)
    assert snap.decode_errors_total == 0 and snap.in_flight == 1


def test_new_phases_never_share_a_datagram_with_the_first_versions(tmp_path):
    path = str(tmp_path / "listen.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(0.5)
        emitter = SpanEmitter(0, path)
        for phase in ("received", "queued", "prefill", "decode", "stream", "finished"):
            emitter.add("request", phase, "r", 1, 2)
        for phase in ("step", "idle", "gc", "heartbeat"):
            emitter.add("step", phase, phase, 1, 2)
        emitter.flush()
        datagrams = []
        while True:
            try:
                datagrams.append([s.phase for s in wire.decode(sock.recv(wire.MAX_DATAGRAM))[1]])
            except socket.timeout:
                break
    core = set(wire.CORE_PHASES)
    assert datagrams == [["received", "stream", "idle", "gc", "heartbeat"],  # first: "stream" before "finished"
                         ["queued", "prefill", "decode", "finished", "step"]]
    assert set(datagrams[1]) <= core and not set(datagrams[0]) & core  # an old agent drops only the first


def test_the_spans_snapshot_crosses_the_control_socket(probe):
    now = time.monotonic_ns()
    send_spans(probe.config.socket, [
        Span("step", "step", "step-1", 0, now, now + 10, attrs={"tid": 4321, "num_waiting": 0}),
        Span("step", "heartbeat", "heartbeat", 0, now + 20, now + 20, attrs={"tid": 4321, "num_in_flight": 2})])
    snap = _poll_until(probe, lambda s: s.senders and next(iter(s.senders.values())).heartbeat_ns)
    back = snapshot_codec.decode("spans", json.loads(json.dumps(snapshot_codec.encode("spans", snap))))
    sender = next(iter(back.senders.values()))
    assert (sender.step_tids, sender.last_step_end_ns, sender.step_tid) == ({0: 4321}, {0: now + 10}, 4321)
    assert (sender.heartbeat_ns, sender.num_in_flight) == (now + 20, 2)


def test_in_flight_returns_to_the_engines_count_after_kill_9(probe):
    """Two engines with requests in flight; one is killed with SIGKILL (no goodbye): the agent's in-flight count
    drops to what the survivor has open."""
    code = f"""
import sys, time
from gpusleuth.probes.spans.synthetic import send_spans
from gpusleuth.probes.spans.wire import Span
now = time.monotonic_ns()
send_spans({probe.config.socket!r}, [Span("request", "received", f"r{{i}}", 0, now, now + 1000) for i in range(N)])
print("sent", flush=True)
time.sleep(600)
"""
    engines = [subprocess.Popen([sys.executable, "-c", code.replace("range(N)", f"range({n})")],
                                stdout=subprocess.PIPE, text=True) for n in (5, 3)]
    try:
        for e in engines:
            assert e.stdout.readline().strip() == "sent"
        _poll_until(probe, lambda s: s.in_flight == 8)
        engines[0].kill()
        engines[0].wait()
        snap = _poll_until(probe, lambda s: s.in_flight == 3)
        assert snap.evicted_by_reason["exited"] == 5 and engines[0].pid not in snap.senders
    finally:
        for e in engines:
            e.kill()
            e.wait()


def test_a_heartbeat_closes_requests_the_engine_no_longer_holds(probe):
    """The engine's heartbeat names its oldest request in flight: requests open here from before it lost their
    "finished" span on the way and are closed (counted), younger ones stay."""
    t0 = time.monotonic_ns()
    send_spans(probe.config.socket, [_received("lost-finish", t0), _received("live", t0 + 5_000_000)])
    _poll_until(probe, lambda s: s.in_flight == 2)
    beat = Span("step", "heartbeat", "heartbeat", 0, t0 + 9_000_000, t0 + 9_000_000,
                attrs={"num_in_flight": 1, "oldest_in_flight_ns": t0 + 5_000_000})
    send_spans(probe.config.socket, [beat])
    snap = _poll_until(probe, lambda s: s.evicted_by_reason["closed_by_engine"] == 1)
    assert snap.in_flight == 1 and snap.evicted_in_flight == 1
