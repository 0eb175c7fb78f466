"""A real engine (`python -m gpusleuth.engine serve`, tiny on CPU) seen by a real span probe, as the diagnosis
contract §1 says: request phases that tile a request from `received` to `finished`, step spans naming the thread
(`gs-step` in /proc), the batch and the scheduler state, idle spans, heartbeats that keep coming while the step loop
is stuck, gc spans from the gc_pause_ms drill and slower steps under the gil_hog_threads drill.
GPUSLEUTH_TEST_DEVICE=cuda runs the same engine on a GPU (where the step spans name it and carry GPU time).
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from gpusleuth.agent.harness import wait_for
from gpusleuth.probes.spans import wire
from gpusleuth.probes.spans.probe import SpanConfig, SpanProbe

PHASES = ("received", "queued", "prefill", "decode", "stream", "finished")
DEVICE = os.environ.get("GPUSLEUTH_TEST_DEVICE", "cpu")


class Intake:
    """A running SpanProbe and every event it produced so far."""

    def __init__(self, probe: SpanProbe) -> None:
        self.probe, self.events, self.snap = probe, [], None

    def poll(self):
        result = self.probe.poll(time.monotonic_ns())
        self.events += result.events
        self.snap = result.snapshot
        return self.snap

    def wait(self, predicate, timeout: float = 60.0):
        return wait_for(lambda: (self.poll(), predicate())[1], timeout=timeout)

    def of(self, kind: str, request_id: str | None = None) -> list:
        return [e for e in self.events
                if e.kind == kind and (request_id is None or e.attrs["request_id"] == request_id)]


class Engine:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc, self.base = proc, f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            data = resp.read().decode()
        if body.get("stream"):
            return json.loads(data.split("data: ", 2)[1])  # the first chunk carries the id
        return json.loads(data)

    def complete(self, max_tokens: int, prompt: str = "spans please", **extra) -> str:
        return self.post("/v1/completions", {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
                                             "temperature": 0, **extra})["id"]

    def tasks(self) -> dict[int, str]:
        """tid -> comm of every thread of the engine process."""
        out = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                out[int(task.name)] = (task / "comm").read_text().strip()
            except OSError:
                pass  # a thread that ended meanwhile
        return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    probe = SpanProbe(SpanConfig(socket=str(tmp / "spans.sock")))
    probe.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpusleuth.engine", "serve", "--preset", "tiny", "--device", DEVICE, "--port", "0",
         "--cpu-threads", "1", "--max-num-seqs", "8", "--max-num-batched-tokens", "128"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, wire.SOCKET_ENV: str(tmp / "spans.sock")})
    try:
        match = re.search(r"http://[\d.]+:(\d+)", proc.stdout.readline())
        assert match, "the engine printed no serving line"
        yield Engine(proc, int(match.group(1))), Intake(probe)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        probe.stop()


def _step_tid(engine: Engine) -> int:
    tids = [tid for tid, comm in engine.tasks().items() if comm == "gs-step"]
    assert len(tids) == 1, engine.tasks()
    return tids[0]


def _finished(intake: Intake, request_id: str) -> bool:
    return bool(intake.of("request.finished", request_id))


def test_threads_are_named(served):
    engine, _ = served
    comms = engine.tasks()
    assert Path(f"/proc/{engine.pid}/comm").read_text().strip() == "gs-engine"
    assert sorted(c for c in comms.values() if c in ("gs-step", "gs-http")) == ["gs-http", "gs-step"]


@pytest.mark.parametrize("is_stream", [False, True])
def test_request_phases_tile_from_received_to_finished(served, is_stream):
    engine, intake = served
    rid = engine.complete(6, stream=is_stream)
    intake.wait(lambda: _finished(intake, rid))
    spans = {p: intake.of(f"request.{p}", rid) for p in PHASES}
    assert all(len(v) == 1 for v in spans.values()), {p: len(v) for p, v in spans.items()}
    ev = {p: v[0] for p, v in spans.items()}
    for a, b in zip(PHASES, PHASES[1:]):
        assert ev[a].end_ns == ev[b].start_ns, f"{a} ends at {ev[a].end_ns}, {b} starts at {ev[b].start_ns}"
    done = ev["finished"].attrs
    assert done["status"] == "length" and ev["finished"].attrs["tokens"] == 6
    assert done["e2e_s"] == pytest.approx((ev["finished"].end_ns - ev["received"].start_ns) / 1e9, abs=1e-6)
    assert ev["received"].attrs["tokenize_ms"] > 0 and ev["received"].attrs["read_ms"] >= 0
    row = next(r for r in intake.snap.recent if r["request_id"] == rid)
    parts = [row[k] for k in ("received_s", "queue_s", "prefill_s", "decode_s", "stream_s")]
    assert all(p is not None and p >= 0 for p in parts) and sum(parts) == pytest.approx(row["e2e_s"], abs=1e-5)

    steps = [e for e in intake.of("engine.step") if rid in e.attrs["request_ids"]]
    assert len(steps) == 6  # alone: one prefill step, then a decode step per further token
    prompt_tokens = ev["queued"].attrs["tokens"]
    assert [(s.attrs["num_prefill"], s.attrs["num_prefill_tokens"]) for s in steps[:1]] == [(1, prompt_tokens)]
    assert all((s.attrs["num_decode"], s.attrs["num_prefill_tokens"]) == (1, 0) for s in steps[1:])
    assert steps[0].start_ns <= ev["prefill"].start_ns <= steps[0].end_ns  # scheduled inside its first step
    assert 0 <= ev["decode"].end_ns - steps[-1].end_ns < 5e6  # finished right after its last token's step
    tid = _step_tid(engine)
    assert {s.attrs["tid"] for s in steps} == {tid}
    if DEVICE == "cpu":
        assert all(s.attrs["gpu_uuid"] is None and "gpu_ms" not in s.attrs for s in steps)  # no GPU, no GPU time
    else:
        assert all(s.attrs["gpu_uuid"].startswith("GPU-") and s.attrs["gpu_index"] == 0 for s in steps)
        assert all(0 < s.attrs["gpu_ms"] and s.attrs["gpu_step"] <= s.attrs["step_id"] for s in steps[1:])


def test_idle_and_heartbeat_spans_name_the_step_thread(served):
    engine, intake = served
    engine.complete(2)
    time.sleep(1.6)  # idle: the step loop waits, the server beats
    snap = intake.poll()
    tid = _step_tid(engine)
    idle = intake.of("engine.idle")
    beats = [e for e in intake.of("engine.heartbeat") if e.start_ns > time.monotonic_ns() - 1.5e9]
    assert idle and {e.attrs["tid"] for e in idle} == {tid}
    assert 2 <= len(beats) <= 4 and {e.attrs["tid"] for e in beats} == {tid}  # every 0.5 s
    assert {e.attrs["num_in_flight"] for e in beats} == {0}
    sender = snap.senders[engine.pid]
    steps = intake.of("engine.step")
    assert (sender.step_tids, sender.step_tid, sender.num_in_flight) == ({0: tid}, tid, 0)
    assert sender.last_step_end_ns == {0: max(e.end_ns for e in steps)}
    assert sender.heartbeat_ns == max(e.end_ns for e in intake.of("engine.heartbeat"))


def test_heartbeats_report_work_while_the_step_loop_is_stuck(served):
    engine, intake = served
    engine.post("/debug/faults", {"scheduler_sleep_ms": 2500})
    try:
        worker = threading.Thread(target=engine.complete, args=(2,))
        worker.start()
        snap = intake.wait(lambda: intake.snap.in_flight == 1 and intake.snap.senders[engine.pid].num_in_flight == 1
                           and intake.snap, timeout=10)
        rid = intake.of("request.received")[-1].attrs["request_id"]
        assert snap.in_flight == 1 and not [e for e in intake.of("engine.step") if rid in e.attrs["request_ids"]]
        worker.join(timeout=60)
        intake.wait(lambda: _finished(intake, rid))
    finally:
        engine.post("/debug/faults", {"scheduler_sleep_ms": 0})
    first = next(e for e in intake.of("engine.step") if rid in e.attrs["request_ids"])
    assert first.end_ns - first.start_ns >= 2.5e9
    inside = [e for e in intake.of("engine.heartbeat") if first.start_ns < e.start_ns < first.end_ns]
    assert len(inside) >= 3, "heartbeats stopped while the step loop slept"
    assert all(e.attrs["num_in_flight"] == 1 for e in inside)


def test_gc_pause_drill_shows_as_full_collections_inside_steps(served):
    engine, intake = served
    engine.post("/debug/faults", {"gc_pause_ms": 40.0, "gc_every_steps": 2})
    try:
        engine.complete(1)  # the drill is set on the step thread before this request's step: calibrated by then
        rid = engine.complete(8)
        intake.wait(lambda: _finished(intake, rid))
    finally:
        engine.post("/debug/faults", {"gc_pause_ms": 0.0})
    steps = [e for e in intake.of("engine.step") if rid in e.attrs["request_ids"]]
    tid = _step_tid(engine)
    pauses = [g for g in intake.of("engine.gc") if g.attrs["generation"] == 2 and g.attrs["tid"] == tid
              and any(s.start_ns <= g.start_ns and g.end_ns <= s.end_ns for s in steps)]
    assert len(pauses) == 4  # 8 steps, one full collection every 2
    assert all(g.duration_ns >= 20e6 and g.attrs["collected"] > 0 for g in pauses), \
        [(g.duration_ns / 1e6, g.attrs["collected"]) for g in pauses]


def test_gil_hog_drill_starts_threads_that_slow_the_steps(served):
    engine, intake = served

    def median_step_ms() -> float:
        rid = engine.complete(16)
        intake.wait(lambda: _finished(intake, rid))
        return statistics.median((e.end_ns - e.start_ns) / 1e6 for e in intake.of("engine.step")
                                 if rid in e.attrs["request_ids"] and e.attrs["num_prefill"] == 0)

    clean = median_step_ms()
    engine.post("/debug/faults", {"gil_hog_threads": 2})
    try:
        wait_for(lambda: list(engine.tasks().values()).count("gs-gil-hog") == 2, timeout=10)
        hogged = median_step_ms()
    finally:
        engine.post("/debug/faults", {"gil_hog_threads": 0})
    wait_for(lambda: "gs-gil-hog" not in engine.tasks().values(), timeout=10)
    print(f"FIGURE gil hogs: decode step {clean:.1f} ms clean, {hogged:.1f} ms with 2 hog threads")
    assert hogged > 2 * clean


def test_load_generator_threads_are_named(served):
    from gpusleuth.agent.cli.loadgen import LoadGenerator

    engine, _ = served
    load = LoadGenerator(engine.base, rate_per_s=50, max_tokens=(2, 4), prompt_words=(2, 4))
    load.start()
    try:
        wait_for(lambda: load.stats.ok >= 3, timeout=30)
        comms = {(p / "comm").read_text().strip() for p in Path("/proc/self/task").iterdir()}
    finally:
        load.stop()
    assert "gs-load" in comms
    assert Path("/proc/self/comm").read_text().strip() != "gs-load"  # only its own threads
