"""The TP straggler on CPU (root, eBPF): the bundled engine at TP=2 over gloo with its all-reduce delay drill on
rank 1, watched by the cuda probe's gloo uprobes (c10d::ProcessGroupGloo in the real libtorch_cpu.so: its
collective entry points and getContext(tag), whose tag numbers each collective the same on every rank). Each of
rank 0's steps (its own step spans) must name rank 1 as the rank that held it back."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.cuda.config import CudaConfig
from gpusleuth.probes.cuda.join import Step, straggler_per_step
from gpusleuth.probes.cuda.probe import CudaProbe
from gpusleuth.probes.records import monotonic_ns
from gpusleuth.probes.spans.probe import SpanConfig, SpanProbe

pytestmark = pytest.mark.root
DELAY_MS = 20.0


def _children(pid: int) -> set[int]:
    try:
        return {int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()}
    except OSError:
        return set()


def _run_engine(tmp_path, probe: CudaProbe, spans: SpanProbe) -> tuple[list, list]:
    """Run a TP=2 generate to its end, keeping both ranks watched; the probe's events and the step spans."""
    env = dict(os.environ, GPUSLEUTH_SPAN_SOCKET=str(tmp_path / "spans.sock"))
    cmd = [sys.executable, "-m", "gpusleuth.engine", "generate", "--device", "cpu", "--tp", "2", "--cpu-threads",
           "1", "--preset", "tiny", "--max-tokens", "96", "--ignore-eos", "--prompt", "where is the straggler",
           "--fault-rank", "1", "--fault-allreduce-delay-ms", str(DELAY_MS)]
    engine = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    events, steps = [], []
    try:
        while engine.poll() is None:
            probe.update_watch(WatchSet(tgids=frozenset({engine.pid} | _children(engine.pid))))
            events += probe.poll(monotonic_ns()).events
            steps += [e for e in spans.poll(monotonic_ns()).events if e.kind == "engine.step"]
            time.sleep(0.05)
        events += probe.poll(monotonic_ns()).events
        steps += [e for e in spans.poll(monotonic_ns()).events if e.kind == "engine.step"]
    finally:
        if engine.poll() is None:
            engine.kill()
        err = engine.communicate()[1]
    assert engine.returncode == 0, err[-2000:]
    return events, steps


def test_the_delayed_rank_is_named_in_its_steps(tmp_path):
    spans = SpanProbe(SpanConfig(socket=str(tmp_path / "spans.sock"), interval_s=0.05))
    probe = CudaProbe(CudaConfig(libraries=["gloo"], rescan_interval_s=0.1, straggler_min_ms=1.0))
    spans.start()
    probe.start()
    try:
        events, step_spans = _run_engine(tmp_path, probe, spans)
    finally:
        probe.stop()
        spans.stop()
    late = [e for e in events if e.kind == "tp.straggler"]
    assert late, "no collective was matched across the two ranks"
    both_attached = min(e.start_ns for e in late)  # steps before both ranks had uprobes cannot be judged
    rank0 = sorted((e for e in step_spans if e.attrs["rank"] == 0 and e.start_ns >= both_attached),
                   key=lambda e: e.start_ns)
    named = straggler_per_step([Step(e.pid, 0, e.start_ns, e.end_ns) for e in rank0], late)
    share = sum(r == 1 for r in named) / len(named)
    print(f"FIGURE TP=2 gloo, {DELAY_MS:g} ms delay on rank 1: straggler named in {share:.1%} of {len(named)} "
          f"steps; {len(late)} late collectives")
    assert len(named) >= 30
    assert share >= 0.95
    assert {e.attrs["library"] for e in late} == {"gloo"}
