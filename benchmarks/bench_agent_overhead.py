"""Agent overhead on the engine (issue 8): decode tok/s and p99 TPOT with the agent off vs on, interleaved.

One engine server runs throughout; each round runs the same streaming workload twice, once with no agent and once
with the agent running every probe (syscalls, sched, net, gpu, spans) watching the engine. Targets: <= 1 % tok/s
and <= 2 % p99 TPOT. Run as root on the GPU host (after the offline install, pass --agent /opt/gpusleuth/bin/agent):
  python3 benchmarks/bench_agent_overhead.py --preset llama3-8b --rounds 5
  python3 benchmarks/bench_agent_overhead.py --preset llama3-70b --tp 8 --expect-gpus 8   # multi-GPU host
  python3 benchmarks/bench_agent_overhead.py --smoke        # CPU: tiny model, short rounds
At the end of every agent-on run, benchmarks/stack_check.py records what the agent holds (GPUs sampled, spans per
rank, host events joined to the engine's processes, the slowest request explained); --expect-gpus/--expect-ranks
turn that into a pass/fail line (ranks default to --tp).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engine_serving as serving  # noqa: E402
import stack_check  # noqa: E402
from bench_common import log, write_result  # noqa: E402
from gpusleuth.agent.harness import write_config  # noqa: E402

EXPORTER = "127.0.0.1:19466"


def agent_config(tmp: Path) -> Path:
    """Every probe and the default watch list; paths under tmp, spans to tmp/spans.sock."""
    return write_config(tmp, None, extra=f'[probes.spans]\nsocket = "{tmp}/spans.sock"\n', flush_s=None,
                        listen=EXPORTER, watch=None)


def run_workload(args, port: int, reqs) -> dict:
    return asyncio.run(serving.run_rate(args, port, args.preset, reqs, float("inf")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default=str(Path(sys.executable).parent / "agent"), help="the agent command")
    p.add_argument("--preset", default="llama3-8b")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--num-requests", type=int, default=16, help="concurrent streams per workload run")
    p.add_argument("--output-tokens", type=int, default=256)
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel ranks of the engine")
    p.add_argument("--engine-args", default="", help="extra flags for `python -m gpusleuth.engine serve`")
    p.add_argument("--expect-gpus", type=int, default=0, help="GPUs the agent must have sampled (0: no check)")
    p.add_argument("--expect-ranks", type=int, default=-1, help="ranks that must send spans (default: --tp)")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default="benchmarks/results/bench_agent_overhead.json")
    args = p.parse_args()
    args.seed, args.startup_timeout = 0, 900
    args.max_num_seqs, args.max_num_batched_tokens = 256, 2048
    args.engine_args = args.engine_args.split()
    if args.expect_ranks < 0:
        args.expect_ranks = args.tp
    args.min_prompt = args.max_prompt = 128
    args.min_output = args.max_output = args.output_tokens
    if args.smoke:
        args.preset, args.rounds, args.num_requests, args.min_output, args.max_output = "tiny", 2, 4, 16, 16
        args.min_prompt = args.max_prompt = 16
        args.engine_args += ["--device", "cpu", "--cpu-threads", "1"]
    from gpusleuth.engine.config import preset

    args.vocab = preset(args.preset).vocab_size
    reqs = serving.make_requests(args)
    tmp = Path(tempfile.mkdtemp(prefix="gs-overhead-"))
    conf = agent_config(tmp)
    os.environ["GPUSLEUTH_SPAN_SOCKET"] = f"{tmp}/spans.sock"  # the engine sends spans there (dropped when off)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serving.start_server(args, port)
    rounds = []
    try:
        run_workload(args, port, reqs[:4])  # warm-up: compile, CUDA graphs
        for r in range(args.rounds):
            off = run_workload(args, port, reqs)
            started = subprocess.run([args.agent, "--config", str(conf), "start"], capture_output=True, text=True)
            if started.returncode != 0:
                raise SystemExit(f"agent start failed: {started.stderr}")
            time.sleep(3)  # probes attached and polling
            t_on = time.monotonic()
            on = run_workload(args, port, reqs)
            time.sleep(1.0)  # the spans probe polls every 0.25 s: let the last request's spans land
            try:
                stack = stack_check.capture(f"{tmp}/agent.sock", time.monotonic() - t_on + 1,
                                            f"http://{EXPORTER}/metrics", f"http://127.0.0.1:{port}/metrics")
                stack["problems"] = stack_check.check(stack, args.expect_gpus, args.expect_ranks)
            finally:
                subprocess.run([args.agent, "--config", str(conf), "stop"], capture_output=True)
            rounds.append({"off": off, "on": on, "probes": stack["probes"], "agent_rss_mb": stack["agent_rss_mb"],
                           "stack": stack})
            (tmp / f"stack-round{r}.json").write_text(json.dumps(stack, indent=1, default=str))
            log(f"round {r}: off {off['output_throughput']:.1f} tok/s p99 TPOT {off['tpot_ms']['p99']:.2f} ms | "
                f"on {on['output_throughput']:.1f} tok/s p99 TPOT {on['tpot_ms']['p99']:.2f} ms | "
                f"probes {rounds[-1]['probes']} | GPUs sampled "
                f"{sum(g['util_samples'] > 0 for g in stack['gpus'].values())}, span ranks {stack['engine']['ranks']}"
                f" | problems {stack['problems'] or 'none'}")
    finally:
        serving.stop_server(server)

    def med(side: str, key) -> float:
        return statistics.median(key(r[side]) for r in rounds)

    tok_off, tok_on = med("off", lambda x: x["output_throughput"]), med("on", lambda x: x["output_throughput"])
    p99_off, p99_on = med("off", lambda x: x["tpot_ms"]["p99"]), med("on", lambda x: x["tpot_ms"]["p99"])
    import torch  # noqa: PLC0415

    result = {"benchmark": "agent_overhead", "device": torch.cuda.get_device_name() if torch.cuda.is_available()
              and not args.smoke else "cpu", "gpus_visible": torch.cuda.device_count(), "preset": args.preset,
              "tp": args.tp, "rounds": rounds, "stack_problems": [r["stack"]["problems"] for r in rounds],
              "median_tok_s": {"off": tok_off, "on": tok_on}, "median_p99_tpot_ms": {"off": p99_off, "on": p99_on},
              "tok_s_loss_pct": 100 * (tok_off - tok_on) / tok_off, "p99_tpot_increase_pct": 100 * (p99_on - p99_off) / p99_off,
              "targets": {"tok_s_loss_le_1pct": (tok_off - tok_on) / tok_off <= 0.01,
                          "p99_tpot_increase_le_2pct": (p99_on - p99_off) / p99_off <= 0.02}}
    write_result(args.out, result)
    log(json.dumps({k: result[k] for k in ("median_tok_s", "median_p99_tpot_ms", "tok_s_loss_pct",
                                            "p99_tpot_increase_pct", "targets")}))


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root: the agent loads BPF programs")
    main()
