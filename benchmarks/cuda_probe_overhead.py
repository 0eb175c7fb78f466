"""The cuda probe's cost on the bundled engine (cuda_probe_check.py's `overhead` stage): one engine server per decode
mode (CUDA graphs, then eager with --no-cuda-graphs), and in each, rounds that run the same streaming workload with
the agent running its default probes and with the default probes plus cuda, the order alternating round by round.
Targets (issue 16): graph decode <= 1 % tok/s lost; eager <= 2 %. The cuda rounds also read the launch rate the
probe saw, which with the per-hit cost (hit_cost stage) says what full per-launch tracing would cost.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import bench_engine_serving as serving
from bench_common import log
from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.harness import free_port, write_config
from gpusleuth.probes import registry

MODES = {"graphs": [], "eager": ["--no-cuda-graphs"]}


def _agent_config(tmp: Path, with_cuda: bool) -> Path:
    probes = [p for p in registry.DEFAULT_ENABLED if p != "cuda"] + (["cuda"] if with_cuda else [])
    d = tmp / ("cuda" if with_cuda else "default")
    d.mkdir(parents=True, exist_ok=True)
    return write_config(d, probes, extra=f'[probes.spans]\nsocket = "{tmp}/spans.sock"\n', flush_s=None,
                        watch=None)


def _launches(conf: Path) -> tuple[int, bool]:
    """(kernel launches the cuda probe counted in all processes, whether it is attached to any), from the agent."""
    with ControlClient(str(conf.parent / "agent.sock")) as client:
        snap = client.call("snapshot", sources=["cuda"]).get("cuda") or {}
    procs = (snap.get("processes") or {}).values()
    return sum(p.get("launches", 0) for p in procs), bool(snap.get("uprobes"))


def _round(args, conf: Path, port: int, reqs) -> dict:
    with_cuda = conf.parent.name == "cuda"
    started = subprocess.run([args.agent, "--config", str(conf), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        raise SystemExit(f"agent start failed: {started.stderr}")
    try:
        time.sleep(3)  # probes attached and polling (the engine is watched as a span sender)
        if with_cuda:  # its uprobes go on once the engine is watched and its libraries read
            deadline = time.monotonic() + 30
            while not _launches(conf)[1] and time.monotonic() < deadline:
                time.sleep(0.5)
            before = _launches(conf)[0]
        result = asyncio.run(serving.run_rate(args, port, args.preset, reqs, float("inf")))
        time.sleep(1.5)  # the probe's next poll reads the last launches
        result["launch_rate"] = (_launches(conf)[0] - before) / result["duration_s"] if with_cuda else None
    finally:
        subprocess.run([args.agent, "--config", str(conf), "stop"], capture_output=True)
    return result


def _mode(args, flags: list[str], tmp: Path, reqs) -> dict:
    port = free_port()
    args.engine_args = flags
    server = serving.start_server(args, port)
    rounds = []
    try:
        asyncio.run(serving.run_rate(args, port, args.preset, reqs[:2], float("inf")))  # warm-up
        confs = {False: _agent_config(tmp, False), True: _agent_config(tmp, True)}
        for r in range(args.overhead_rounds):
            order = [False, True] if r % 2 == 0 else [True, False]
            row = {("cuda" if c else "default"): _round(args, confs[c], port, reqs) for c in order}
            rounds.append(row)
            log(f"  round {r}: default {row['default']['output_throughput']:.1f} tok/s, +cuda "
                f"{row['cuda']['output_throughput']:.1f} tok/s, launch rate {row['cuda']['launch_rate']:.0f}/s")
    finally:
        serving.stop_server(server)
    tok = {k: statistics.median(r[k]["output_throughput"] for r in rounds) for k in ("default", "cuda")}
    p99 = {k: statistics.median(r[k]["tpot_ms"]["p99"] for r in rounds) for k in ("default", "cuda")}
    return {"rounds": [{k: {"tok_s": v["output_throughput"], "p99_tpot_ms": v["tpot_ms"]["p99"],
                            "launch_rate": v["launch_rate"]} for k, v in r.items()} for r in rounds],
            "median_tok_s": tok, "median_p99_tpot_ms": p99,
            "tok_s_loss_pct": 100 * (tok["default"] - tok["cuda"]) / tok["default"],
            "launch_rate": statistics.median(r["cuda"]["launch_rate"] for r in rounds)}


def run(args) -> dict:
    """Both modes; the figures and whether each meets its target."""
    from gpusleuth.engine.config import preset  # noqa: PLC0415

    args.seed, args.startup_timeout, args.tp = 0, 900, 1
    args.max_num_seqs, args.max_num_batched_tokens = 256, 2048
    args.vocab, args.num_requests = preset(args.preset).vocab_size, args.overhead_requests
    args.min_prompt = args.max_prompt = 128
    args.min_output = args.max_output = 256
    reqs = serving.make_requests(args)
    tmp = Path(tempfile.mkdtemp(prefix="gs-cuda-overhead-"))
    os.environ["GPUSLEUTH_SPAN_SOCKET"] = f"{tmp}/spans.sock"  # the engine's spans make the agent watch it
    out = {}
    for mode, flags in MODES.items():
        log(f"overhead, {mode} decode")
        out[mode] = _mode(args, flags, tmp, reqs)
        log(f"  {mode}: {json.dumps({k: out[mode][k] for k in ('median_tok_s', 'tok_s_loss_pct')})}")
    out["targets"] = {"graphs_tok_s_loss_le_1pct": out["graphs"]["tok_s_loss_pct"] <= 1.0,
                      "eager_tok_s_loss_le_2pct": out["eager"]["tok_s_loss_pct"] <= 2.0}
    out["passed"] = all(out["targets"].values())
    return out
