"""What the engine's step span costs on the hot path: a tiny-preset decode step on CPU, spans on vs off.

Two figures per batch size, each the median of interleaved rounds (on/off alternate, so drift of a shared box hits
both alike):
- `record_step_us`: one call of LLMEngine._record_step (build the step span and its attrs, send it, set the step
  metrics) on a real decode plan, spans sent to a listener in a child process; `record_step_off_us` the same with
  the emitter disabled (metrics only): the difference is the span's own cost.
- `step_us` / `step_off_us`: a whole decode step (`engine.step()`) with spans on / off.

Runs on any checkout that has `LLMEngine._record_step(plan, start, end)`, so the same file measures before and after
a change (`--label`), e.g. an extracted older tree on PYTHONPATH:
    git archive HEAD~1 | tar -x -C /tmp/before/gpusleuth && PYTHONPATH=/tmp/before \
        python benchmarks/bench_step_span.py --label before
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from bench_common import log, write_result
from gpusleuth.engine.config import EngineConfig, preset
from gpusleuth.engine.engine import LLMEngine
from gpusleuth.engine.runner import ModelRunner
from gpusleuth.engine.sequence import SamplingParams
from gpusleuth.engine.spans import SpanEmitter
from gpusleuth.engine.tokenizer import load_tokenizer

DRAIN = ("import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); "
         "print('ready', flush=True)\nwhile True: s.recv(1 << 17)")


def build_engine(path: str, batch: int) -> LLMEngine:
    cfg = preset("tiny")
    ecfg = EngineConfig(device="cpu", num_cpu_blocks=1024, max_num_seqs=max(batch, 1), num_cpu_threads=1,
                        max_num_batched_tokens=max(512, batch))
    runner = ModelRunner(cfg, ecfg, torch.device("cpu"))
    runner.init_kv_cache(runner.suggest_num_blocks())
    engine = LLMEngine(runner, load_tokenizer(cfg), emitter=SpanEmitter(0, path))
    params = SamplingParams(max_tokens=1500, temperature=0.0, is_ignore_eos=True)
    for i in range(batch):  # ids as long as the server's (cmpl- + 32 hex): the step span carries them all
        engine.add_request(f"cmpl-{i:032x}", [3 + i % 50] * 16, params)
    while engine.scheduler.waiting or any(s.num_output == 0 for s in engine.scheduler.running):
        engine.step()  # prefill done: every later step is decode-only
    return engine


def time_record(engine: LLMEngine, is_on: bool, calls: int) -> float:
    """Microseconds per _record_step call on the next decode step's plan."""
    engine.emitter.is_enabled = is_on
    plan = engine.scheduler.schedule()  # not run: only its shape matters to the span
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        now = time.monotonic_ns()
        engine._record_step(plan, now, now)
    return (time.perf_counter_ns() - t0) / calls / 1e3


def time_steps(engine: LLMEngine, is_on: bool, steps: int) -> float:
    engine.emitter.is_enabled = is_on
    t0 = time.perf_counter_ns()
    for _ in range(steps):
        engine.step()
    return (time.perf_counter_ns() - t0) / steps / 1e3


def measure(path: str, batch: int, rounds: int, calls: int, steps: int) -> dict:
    engine = build_engine(path, batch)
    rows: dict[str, list[float]] = {"record_step_us": [], "record_step_off_us": [], "step_us": [], "step_off_us": []}
    for r in range(rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        for is_on in order:
            suffix = "_us" if is_on else "_off_us"
            rows["record_step" + suffix].append(time_record(engine, is_on, calls))
            rows["step" + suffix].append(time_steps(engine, is_on, steps))
    out = {k: round(statistics.median(v), 2) for k, v in rows.items()}
    out["span_us"] = round(out["record_step_us"] - out["record_step_off_us"], 2)
    out.update(batch=batch, span_share_of_step=round(out["span_us"] / out["step_off_us"], 4),
               dropped=engine.emitter.num_dropped)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,32", help="decode batch sizes")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=2000, help="_record_step calls per round")
    p.add_argument("--steps", type=int, default=30, help="decode steps per round")
    p.add_argument("--label", default="current")
    p.add_argument("--out", default="")
    args = p.parse_args()
    path = os.path.join(tempfile.mkdtemp(prefix="gs-bench-span-"), "spans.sock")
    drain = subprocess.Popen([sys.executable, "-c", DRAIN, path], stdout=subprocess.PIPE, text=True)
    try:
        assert drain.stdout.readline().strip() == "ready"
        results = [measure(path, int(b), args.rounds, args.calls, args.steps) for b in args.batches.split(",")]
    finally:
        drain.kill()
        drain.wait()
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    result = {"benchmark": "bench_step_span", "device": "cpu", "label": args.label, "preset": "tiny",
              "engine_module": sys.modules[LLMEngine.__module__].__file__, "results": results}
    for row in results:
        log(f"{args.label} batch {row['batch']}: span {row['span_us']} us/step (record_step {row['record_step_us']} "
            f"vs {row['record_step_off_us']} off), step {row['step_us']} vs {row['step_off_us']} us off")
    out = args.out or f"benchmarks/results/bench_step_span_{args.label}.json"
    write_result(out, result)


if __name__ == "__main__":
    main()
