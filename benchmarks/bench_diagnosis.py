"""What the diagnosis costs at 50 requests/s (issue 15: <= 1 ms per request median, agent CPU <= 5 % of a core).

Two parts, both on the agent's real code:
- `inproc`: a synthetic engine (50 req/s, ~11 requests in flight, a prefill and 20 decode steps each, steps back
  to back) plus kernel evidence (off-CPU sleeps of the step thread on a tenth of the steps, slow syscalls of the
  server thread; in the last 2 s of every 10 s the steps are 20 ms slower with a run-queue wait behind a hog, so a
  fifth of the requests are slow and the detectors really run) flows through a real Store into the
  DiagnosisRunner, ticked every 250 ms of simulated time. Figures: the per-request diagnosis the agent does for
  every finished request (budget; all detectors for the slow ones) as a median in ms, a full `explain` median, and
  the diagnosis thread's CPU seconds per simulated second (= its share of a core at that rate).
- `agent`: a real agent (spans, sched, syscalls probes) and a sender process speaking the span protocol at the
  same rate for `--seconds`: the agent process's CPU share of a core, and the diagnosis thread's share of it.

    sudo .venv/bin/python benchmarks/bench_diagnosis.py --out benchmarks/results/bench_diagnosis.json
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench_common import log, write_result
from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.diagnosis.runner import DiagnosisRunner
from gpusleuth.agent.harness import run_agent, wait_for, write_config
from gpusleuth.agent.store import Store
from gpusleuth.probes.records import Event

MS = 1_000_000
PID, TID = 4000, 4001
SENDER = Path(__file__).with_name("diagnosis_load.py")


def engine_events(t0: int, seconds: float, rate: float, seed: int = 1) -> list[Event]:
    """Spans of an engine serving `rate` req/s (4 in flight, 10 ms steps) and the step thread's evidence."""
    from diagnosis_load import SLOW_EXTRA_NS, engine_spans, slow_extra  # noqa: PLC0415 - the sender's
    rng = random.Random(seed)
    out = []
    for span in engine_spans(t0, seconds, rate, seed):
        kind = f"engine.{span.phase}" if span.kind == "step" else f"request.{span.phase}"
        out.append(Event(kind, "spans", span.start_ns, span.end_ns, pid=PID, comm="gs-engine",
                         attrs={"request_id": span.request_id, "rank": 0, "tokens": span.tokens, **span.attrs}))
        if kind == "engine.step" and slow_extra(t0, span.start_ns):  # the slow seconds: a hog took the CPU
            a = span.start_ns + MS
            out.append(Event("runq_delay", "sched", a, a + SLOW_EXTRA_NS, pid=PID, tid=TID, comm="gs-step", attrs={
                "cpu": 1, "idle_ns": 0, "culprits": [{"pid": 9, "tid": 9, "comm": "hog", "ns": SLOW_EXTRA_NS}]}))
        elif kind == "engine.step" and rng.random() < 0.1:  # ordinary background evidence on a tenth of steps
            a = span.start_ns + MS
            out.append(Event("offcpu", "sched", a, a + 2 * MS, pid=PID, tid=TID, comm="gs-step",
                             attrs={"state": "S", "waker_pid": PID, "waker_tid": TID + 1, "waker_comm": "gs-http"}))
        if rng.random() < 0.02:
            out.append(Event("slow_syscall", "syscalls", span.start_ns, span.start_ns + 12 * MS, pid=PID,
                             tid=TID + 1, comm="gs-http", attrs={"syscall": "epoll_wait"}))
    return sorted(out, key=lambda e: e.end_ns)


def inproc(seconds: float, rate: float) -> dict:
    store = Store(64 << 20)
    runner = DiagnosisRunner(store)
    t0 = 10_000_000_000
    events = engine_events(t0, seconds, rate)
    i, tick_ns, now = 0, 250 * MS, t0
    end = t0 + int(seconds * 1e9) + 3_000_000_000
    while now < end:
        now += tick_ns
        j = i
        while j < len(events) and events[j].end_ns <= now:
            j += 1
        store.add(events=events[i:j])
        i = j
        runner.tick(now)
    m = runner.monitor
    rows = list(m.recent)
    sample = random.Random(2).sample(rows, min(200, len(rows)))
    full = []
    for r in sample:
        c0 = time.perf_counter()
        runner.explain(r["request_id"])
        full.append((time.perf_counter() - c0) * 1e3)
    return {"requests": len(rows), "rate_per_s": rate, "simulated_s": seconds,
            "per_request_ms_median": round(statistics.median(m.costs_ms), 4),
            "per_request_ms_p90": round(sorted(m.costs_ms)[int(0.9 * len(m.costs_ms))], 4),
            "explain_ms_median": round(statistics.median(full), 3),
            "diagnosis_cpu_share_of_a_core": round(runner.cpu_s / seconds, 4),
            "slow_requests": sum(1 for r in rows if r["cause"])}


def real_agent(seconds: float, rate: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="gs-bench-diag-"))
    sock = tmp / "spans.sock"
    cfg = write_config(tmp, ["syscalls", "sched", "spans"], extra=f'[probes.spans]\nsocket = "{sock}"\n')
    started = run_agent("--config", str(cfg), "start")
    assert started.returncode == 0, started.stderr
    sender = None
    try:
        client = ControlClient(str(tmp / "agent.sock"))
        agent = psutil.Process(client.call("status")["pid"])
        sender = subprocess.Popen([sys.executable, str(SENDER), str(sock), str(rate), str(seconds + 5)])
        time.sleep(5)  # warm-up: baselines, watch set
        c0, d0 = agent.cpu_times(), client.call("snapshot", sources=["diagnosis"])["diagnosis"]["runner"]["cpu_s"]
        t0 = time.monotonic()
        time.sleep(seconds)
        c1, d1 = agent.cpu_times(), client.call("snapshot", sources=["diagnosis"])["diagnosis"]
        wall = time.monotonic() - t0
        used = (c1.user + c1.system) - (c0.user + c0.system)
        out = {"seconds": round(wall, 1), "rate_per_s": rate, "agent_cpu_share_of_a_core": round(used / wall, 4),
               "diagnosis_cpu_share_of_a_core": round((d1["runner"]["cpu_s"] - d0) / wall, 4),
               "diagnosed_total": d1["diagnosed_total"], "per_request_ms_median": d1["cost_ms_median"]}
        client.close()
        return out
    finally:
        if sender is not None:
            sender.kill()
            sender.wait()
        run_agent("--config", str(cfg), "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--out", default="benchmarks/results/bench_diagnosis.json")
    p.add_argument("--no-agent", action="store_true", help="only the in-process part (needs no root)")
    args = p.parse_args()
    result = {"benchmark": "bench_diagnosis", "host": os.uname().nodename, "cpus": os.cpu_count()}
    log(f"in-process: {args.rate} req/s for {args.seconds} simulated s")
    result["inproc"] = inproc(args.seconds, args.rate)
    log(str(result["inproc"]))
    if not args.no_agent:
        log(f"real agent: {args.rate} req/s for {args.seconds} s")
        result["agent"] = real_agent(args.seconds, args.rate)
        log(str(result["agent"]))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
