"""Spans reach a real Unix datagram listener in the agreed wire format, are dropped and counted when nobody
listens (never blocking), step spans name the batch, the thread and the preempted requests, garbage collections
become gc spans, and the fault hooks do what they say (scheduler sleep, fsync stall, all-reduce delay).
"""
from __future__ import annotations

import gc
import os
import socket
import threading
import time

import pytest
import torch

from engine_helpers import make_engine
from gpusleuth.engine.faults import FaultConfig, RankFaults
from gpusleuth.engine.gc_spans import GcWatch
from gpusleuth.engine.sequence import SamplingParams
from gpusleuth.engine import spans as engine_spans
from gpusleuth.engine.spans import SpanEmitter
from gpusleuth.probes.spans import wire as span_protocol

PARAMS = SamplingParams(max_tokens=6, temperature=0.0, is_ignore_eos=True)


@pytest.fixture
def listener(tmp_path):
    path = str(tmp_path / "spans.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def _drain(sock: socket.socket) -> list[span_protocol.Span]:
    spans = []
    while True:
        try:
            data = sock.recv(span_protocol.MAX_DATAGRAM)
        except socket.timeout:
            return spans
        pid, batch = span_protocol.decode(data)
        assert pid == os.getpid()
        spans += batch


def test_request_phases_and_steps_arrive(listener):
    path, sock = listener
    engine = make_engine(emitter=SpanEmitter(0, path))
    prompts = [engine.tokenizer.encode("span one"), engine.tokenizer.encode("span two, longer")]
    engine.generate(prompts, PARAMS)
    spans = _drain(sock)
    steps = [s for s in spans if s.kind == "step"]
    assert len(steps) == engine.num_steps and all(s.rank == 0 and s.end_ns >= s.start_ns for s in steps)
    assert steps[0].attrs["num_prefill"] == 2 and steps[-1].attrs["num_decode"] >= 1
    for rid in ("gen-0-0", "gen-0-1"):
        phases = {s.phase: s for s in spans if s.request_id == rid}
        assert list(phases) == ["queued", "prefill", "decode", "finished"]
        q, p, d, f = (phases[k] for k in ("queued", "prefill", "decode", "finished"))
        assert q.end_ns == p.start_ns and p.end_ns == d.start_ns and d.end_ns == f.start_ns  # phases tile the request
        assert d.tokens == PARAMS.max_tokens - 1 and f.tokens == PARAMS.max_tokens
        assert f.attrs["status"] == "length" and f.attrs["ttft_s"] > 0 and f.attrs["e2e_s"] >= f.attrs["ttft_s"]
    assert engine.emitter.num_dropped == 0 and engine.emitter.num_sent == len(spans)


class Reader:
    """Drains a listener while the engine sends (its queue holds only net.unix.max_dgram_qlen datagrams)."""

    STOP = b"stop"

    def __init__(self, path: str, sock: socket.socket) -> None:
        self.path, self.sock, self.spans = path, sock, []
        sock.settimeout(60)
        self._thread = threading.Thread(target=self._read)
        self._thread.start()

    def _read(self) -> None:
        while (data := self.sock.recv(span_protocol.MAX_DATAGRAM)) != self.STOP:
            self.spans += span_protocol.decode(data)[1]

    def stop(self) -> list[span_protocol.Span]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(self.STOP, self.path)
        self._thread.join()
        return self.spans


def test_step_spans_name_the_batch_the_thread_and_the_preempted(listener):
    path, sock = listener
    # 7 usable blocks of 16 tokens; 3 requests of 17 prompt tokens growing to 47 need 9: decodes preempt the newest
    engine = make_engine(emitter=SpanEmitter(0, path), num_cpu_blocks=8, block_size=16, max_num_seqs=4)
    reader = Reader(path, sock)
    engine.generate([[5 + i] * 17 for i in range(3)], SamplingParams(max_tokens=30, temperature=0.0,
                                                                      is_ignore_eos=True))
    spans = reader.stop()
    steps = [s for s in spans if s.phase == "step"]
    finished = {s.request_id: s for s in spans if s.phase == "finished"}
    assert len(steps) == engine.num_steps and engine.emitter.num_dropped == 0
    assert {s.attrs["tid"] for s in steps} == {threading.get_native_id()}  # the thread that ran generate()
    first = steps[0].attrs
    assert (first["num_prefill"], first["num_prefill_tokens"], sorted(first["request_ids"])) == (
        3, 51, sorted(finished))
    for s in steps:
        a = s.attrs
        assert len(a["request_ids"]) == a["num_decode"] + a["num_prefill"] == s.batch_size
        assert s.tokens == a["num_decode"] + a["num_prefill_tokens"] and 0 <= a["kv_usage"] <= 1
    preempted = [rid for s in steps for rid in s.attrs["preempted_ids"]]
    assert preempted and sum(s.attrs["num_preempted"] for s in steps) == len(preempted)
    assert {rid: preempted.count(rid) for rid in preempted} == {
        rid: f.attrs["num_preemptions"] for rid, f in finished.items() if f.attrs["num_preemptions"]}
    assert max(s.attrs["kv_usage"] for s in steps) > 0.8


def test_garbage_collections_become_gc_spans(listener):
    path, sock = listener
    emitter = SpanEmitter(0, path, gc_watch=GcWatch())
    with emitter.gc_watch:
        cycle: list = []
        cycle.append(cycle)
        del cycle
        t0 = time.monotonic_ns()
        collected = gc.collect(2)
    emitter.flush()
    spans = [s for s in _drain(sock) if s.phase == "gc"]
    mine = [s for s in spans if s.start_ns >= t0 and s.attrs["generation"] == 2]
    assert len(mine) == 1 and mine[0].attrs["collected"] == collected >= 1
    assert mine[0].attrs["tid"] == threading.get_native_id() and mine[0].kind == "step"
    assert emitter.gc_watch._callback not in gc.callbacks  # uninstalled on exit


def test_no_listener_drops_and_counts(tmp_path):
    engine = make_engine(emitter=SpanEmitter(0, str(tmp_path / "nobody.sock")))
    engine.generate([engine.tokenizer.encode("dropped")], PARAMS)
    assert engine.emitter.num_sent == 0
    assert engine.emitter.num_dropped == engine.num_steps + 4  # every step span + 4 request phases
    assert b"gpusleuth_engine_spans_dropped_total %d.0" % engine.emitter.num_dropped in engine.metrics.render()


def test_a_busy_agent_defers_spans_in_order_and_a_full_backlog_drops_them(listener, monkeypatch):
    path, sock = listener  # bound but not read yet: the socket's queue fills and sends would block
    monkeypatch.setattr(engine_spans, "MAX_BACKLOG_BYTES", 256 << 10)
    emitter = SpanEmitter(0, path)
    start = time.monotonic()
    for i in range(3000):
        emitter.add("step", "step", f"s{i}", 1, 2, attrs_padding="x" * 200)
        emitter.flush()
    assert time.monotonic() - start < 30  # generous: a blocking send would hang forever, not be slow
    waiting = len(emitter._backlog)
    assert emitter.num_sent > 0 and waiting > 0 and emitter.dropped_by_reason["backlog_full"] > 0
    assert emitter.num_sent + waiting + emitter.num_dropped == 3000  # one span per datagram here
    assert emitter.num_dropped == emitter.dropped_by_reason["backlog_full"]
    sock.settimeout(2)
    got, total = [], emitter.num_sent + waiting
    while len(got) < total:  # the agent reads again: the next flushes send the backlog
        got += [s.request_id for s in span_protocol.decode_batch(sock.recv(1 << 16))[1]]
        emitter.flush()
    assert emitter.num_deferred == waiting and not emitter._backlog
    ids = [int(r[1:]) for r in got]
    assert ids == sorted(ids)  # deferred spans kept their order, behind nothing newer



def test_large_batches_split_under_datagram_limit(listener):
    path, sock = listener
    emitter = SpanEmitter(0, path)
    for i in range(700):
        emitter.add("request", "decode", f"r{i}", 1, 2, tokens=i, note="y" * 100)
    emitter.flush()
    got = _drain(sock)
    assert [s.tokens for s in got] == list(range(700))


def test_scheduler_sleep_fault_lengthens_steps(listener):
    path, sock = listener
    engine = make_engine(emitter=SpanEmitter(0, path))
    engine.set_faults(FaultConfig(scheduler_sleep_ms=60.0))
    engine.generate([engine.tokenizer.encode("slow")], PARAMS)
    steps = [s for s in _drain(sock) if s.kind == "step"]
    assert steps and all(s.end_ns - s.start_ns >= 60e6 for s in steps)


def test_fsync_fault_writes_and_syncs_a_file(tmp_path):
    engine = make_engine()
    engine.set_faults(FaultConfig(fsync_mb=2, fsync_every_steps=1, fsync_dir=str(tmp_path)))
    engine.generate([engine.tokenizer.encode("fsync")], PARAMS)
    fd = engine.faults._fd  # the drill's file has no name (engine/faults.py open_unnamed)
    assert fd is not None and os.fstat(fd).st_size == 2 << 20 and list(tmp_path.iterdir()) == []
    assert os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path))
    engine.faults.close()
    assert engine.faults._fd is None


def test_allreduce_delay_hits_first_all_reduce_of_each_step_on_its_rank():
    faulty, healthy = RankFaults(1, torch.device("cpu")), RankFaults(0, torch.device("cpu"))
    for rf in (faulty, healthy):
        rf.update(FaultConfig(rank=1, allreduce_delay_ms=50.0, gpu_ballast_gib=0.001))
    assert faulty._ballast is not None and faulty._ballast.numel() == int(0.001 * (1 << 30))
    assert healthy._ballast is None
    for rf, expect_delay in ((faulty, True), (healthy, False)):
        rf.begin_step()
        t0 = time.monotonic()
        rf.pre_all_reduce()
        first = time.monotonic() - t0
        t0 = time.monotonic()
        rf.pre_all_reduce()
        second = time.monotonic() - t0
        assert (first >= 0.05) is expect_delay and second < 0.05


def test_fault_config_from_dict_names_bad_keys():
    from gpusleuth.probes.config import ConfigError

    cfg = FaultConfig.from_dict({"scheduler_sleep_ms": 5})
    assert cfg.scheduler_sleep_ms == 5
    with pytest.raises(ConfigError) as exc:
        FaultConfig.from_dict({"sleep": 1})
    assert exc.value.key == "sleep"
    with pytest.raises(ConfigError) as exc:
        FaultConfig.from_dict({"fsync_mb": "big"})
    assert exc.value.key == "fsync_mb"


def test_step_spans_carry_scheduler_state_to_the_agent_and_the_tui(tmp_path):
    from gpusleuth.probes.spans.probe import SpanConfig, SpanProbe
    from gpusleuth.probes.spans.snapshot import SpanSender, SpansSnapshot
    from gpusleuth.tui.views import engine_gauges

    probe = SpanProbe(SpanConfig(socket=str(tmp_path / "spans.sock")))
    probe.start()
    try:
        engine = make_engine(emitter=SpanEmitter(0, str(tmp_path / "spans.sock")), max_num_seqs=2)
        for i, text in enumerate(("gauge one", "gauge two", "gauge three waits")):
            engine.add_request(f"g{i}", engine.tokenizer.encode(text), PARAMS)
        engine.step()  # two admitted (max_num_seqs=2), one waiting

        def sender() -> SpanSender:
            time.sleep(0.3)  # the intake thread reads the datagram
            return probe.poll(time.monotonic_ns()).snapshot.senders[os.getpid()]

        mid = sender()
        assert (mid.num_running, mid.num_waiting) == (2, 1) and mid.kv_usage > 0
        assert engine_gauges(SpansSnapshot(senders={1: mid})) == {"in_flight": 0, "queue": 1, "running": 2,
                                                                  "kv": mid.kv_usage}
        while engine.has_work:
            engine.step()
        end = sender()
        assert (end.num_running, end.num_waiting, end.kv_usage) == (0, 0, 0.0)
    finally:
        probe.stop()
