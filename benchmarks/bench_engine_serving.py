"""Serving benchmark: the engine's OpenAI server under Poisson load vs Hugging Face `generate` in static batches.

Requests (seeded): prompts of uniform 128..1024 random token ids, outputs of uniform 128..512 tokens (ignore_eos,
greedy). For each --rates value (requests/s, "inf" = all at once) a streaming client (aiohttp, like `vllm bench
serve`) measures, as vLLM defines them: TTFT (send -> first token chunk), TPOT per request ((latency - TTFT) /
(output tokens - 1)), ITL (every gap between token chunks), E2E latency, each mean/median/p99; output tok/s = all
output tokens / (last response - first send). The baseline runs the same requests (the first --hf-requests of them)
through transformers' LlamaForCausalLM.generate in static batches of --hf-batch-size (left padded, all requests
available at t=0, each batch generating to its longest output); its output tok/s counts only requested tokens.
Target: engine output tok/s >= 5x the baseline. `--smoke` runs a tiny CPU version.

    python benchmarks/bench_engine_serving.py --num-requests 1000 --rates 8,32,inf \\
        --out benchmarks/results/bench_engine_serving.json

Server before/after (`--baseline-src DIR`, a copy of an earlier commit: `git archive REV | tar -x -C DIR`): the same
requests against the server of DIR and of this checkout, alternating for --rounds rounds (a shared box drifts), each
on a fresh server; the result has each side's output tok/s per round and the ratio of the medians. `--cpu-streams N`
is the CPU version: tiny, N streams at once, prompts 32..128 and outputs 128..256 tokens, no HF baseline.

    python benchmarks/bench_engine_serving.py --cpu-streams 64 --baseline-src /tmp/gs-base --rounds 5 \\
        --out benchmarks/results/bench_engine_serving_http_cpu.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import torch

from bench_common import log, write_result


def make_requests(args) -> list[tuple[list[int], int]]:
    rng = random.Random(args.seed)
    vocab = min(args.vocab, 32000)
    reqs = []
    for _ in range(args.num_requests):
        n_in = rng.randint(args.min_prompt, args.max_prompt)
        reqs.append(([rng.randrange(3, vocab) for _ in range(n_in)], rng.randint(args.min_output, args.max_output)))
    return reqs


# ---- the engine's server ------------------------------------------------------------------------------------------
def _env_for(src: str | None) -> dict | None:
    """The environment that imports `gpusleuth` from checkout `src` (a link named gpusleuth on PYTHONPATH)."""
    if not src:
        return None
    link_dir = os.path.join(os.path.abspath(src), ".gs-src")
    os.makedirs(link_dir, exist_ok=True)
    link = os.path.join(link_dir, "gpusleuth")
    if not os.path.islink(link):
        os.symlink(os.path.abspath(src), link)
    return {**os.environ, "PYTHONPATH": link_dir + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start_server(args, port: int, src: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gpusleuth.engine", "serve", "--preset", args.preset, "--port", str(port),
           "--max-num-seqs", str(args.max_num_seqs), "--max-num-batched-tokens", str(args.max_num_batched_tokens),
           "--max-waiting", "1000000", "--max-model-len", "2048", "--tp", str(args.tp), *args.engine_args]
    log("starting: " + " ".join(cmd))
    proc = subprocess.Popen(cmd, env=_env_for(src))
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"engine server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise SystemExit("engine server did not become healthy in time")


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C the server (it shuts its ranks down), then kill it if it has not exited within a minute."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


async def one_request(session, url: str, model: str, prompt: list[int], max_tokens: int, t_send: float) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    chunks, usage = [], None
    async with session.post(url, json=body) as resp:
        if resp.status != 200:
            return {"ok": False, "error": f"HTTP {resp.status}: {(await resp.text())[:200]}"}
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("choices"):
                chunks.append(time.perf_counter())
            if data.get("usage"):
                usage = data["usage"]
    out_tokens = usage["completion_tokens"] if usage else len(chunks)
    return {"ok": bool(chunks), "t_send": t_send, "chunks": chunks, "output_tokens": out_tokens,
            "prompt_tokens": len(prompt), "expected_tokens": max_tokens}


async def run_rate(args, port: int, model: str, reqs, rate: float) -> dict:
    import aiohttp

    rng = np.random.default_rng(args.seed)
    gaps = np.zeros(len(reqs)) if rate == float("inf") else rng.exponential(1.0 / rate, len(reqs))
    url = f"http://127.0.0.1:{port}/v1/completions"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=900)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks, done = [], [0]
        start = time.perf_counter()

        async def tracked(prompt, n):
            res = await one_request(session, url, model, prompt, n, time.perf_counter())
            done[0] += 1
            if done[0] % max(1, len(reqs) // 10) == 0:
                log(f"    {done[0]}/{len(reqs)} done ({time.perf_counter() - start:.0f} s)")
            return res

        for (prompt, n), gap in zip(reqs, gaps):
            await asyncio.sleep(gap)
            tasks.append(asyncio.create_task(tracked(prompt, n)))
        results = await asyncio.gather(*tasks)
        return summarize(results, time.perf_counter() - start, rate)


def _stats(values, scale: float = 1e3) -> dict:
    if not values:
        return {"mean": None, "median": None, "p99": None}
    arr = np.asarray(values) * scale
    return {"mean": float(arr.mean()), "median": float(np.median(arr)), "p99": float(np.percentile(arr, 99))}


def summarize(results: list[dict], duration: float, rate: float) -> dict:
    ok = [r for r in results if r["ok"]]
    ttft = [r["chunks"][0] - r["t_send"] for r in ok]
    e2e = [r["chunks"][-1] - r["t_send"] for r in ok]
    tpot = [(r["chunks"][-1] - r["chunks"][0]) / (r["output_tokens"] - 1) for r in ok if r["output_tokens"] > 1]
    itl = [b - a for r in ok for a, b in zip(r["chunks"], r["chunks"][1:])]
    out_tokens = sum(r["output_tokens"] for r in ok)
    in_tokens = sum(r["prompt_tokens"] for r in ok)
    return {"rate": "inf" if rate == float("inf") else rate, "completed": len(ok), "failed": len(results) - len(ok),
            "errors": [r["error"] for r in results if not r["ok"]][:3],
            "short_outputs": sum(r["output_tokens"] != r["expected_tokens"] for r in ok),
            "duration_s": duration, "request_throughput": len(ok) / duration,
            "output_throughput": out_tokens / duration, "total_token_throughput": (in_tokens + out_tokens) / duration,
            "ttft_ms": _stats(ttft), "tpot_ms": _stats(tpot), "itl_ms": _stats(itl), "e2el_ms": _stats(e2e)}


# ---- the transformers baseline -----------------------------------------------------------------------------------
def hf_baseline(args, reqs) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from gpusleuth.engine.config import preset

    cfg = preset(args.preset)
    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta,
        rope_scaling=dict(cfg.rope_scaling) if cfg.rope_scaling else None, max_position_embeddings=4096,
        tie_word_embeddings=cfg.is_tied_embeddings, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
        attn_implementation="sdpa")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(args.seed)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in bf16 (no fp32 copy of 8B weights first)
    try:
        with torch.device(device):  # random weights made on the GPU directly
            model = LlamaForCausalLM(hf_cfg).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    sub = reqs[: args.hf_requests]
    bs = args.hf_batch_size
    generated = 0
    _hf_batch(model, sub[:2], device)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(sub), bs):
        batch = sub[i:i + bs]
        t0 = time.perf_counter()
        _hf_batch(model, batch, device)
        generated += sum(n for _, n in batch)
        num_batches = -(-len(sub) // bs)
        log(f"    HF batch {i // bs + 1}/{num_batches}: {len(batch)} requests in {time.perf_counter() - t0:.1f} s")
    duration = time.perf_counter() - start
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"requests": len(sub), "batch_size": bs, "duration_s": duration, "output_throughput": generated / duration}


@torch.no_grad()
def _hf_batch(model, batch, device) -> None:
    width = max(len(p) for p, _ in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, (prompt, _) in enumerate(batch):  # left padding, as decoder-only generation needs
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    longest = max(n for _, n in batch)
    model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=longest,
                   min_new_tokens=longest, do_sample=False, pad_token_id=0)


def compare_servers(args, reqs, port: int) -> dict:
    """Output tok/s of the baseline checkout's server and this one's, alternating rounds, all at rate inf."""
    sides: dict[str, list[float]] = {"baseline": [], "current": []}
    for r in range(args.rounds):
        for side, src in (("baseline", args.baseline_src), ("current", None)):
            server = start_server(args, port, src)
            try:
                asyncio.run(run_rate(args, port, args.preset, reqs[:4], float("inf")))  # warm-up
                run = asyncio.run(run_rate(args, port, args.preset, reqs, float("inf")))
            finally:
                stop_server(server)
            sides[side].append(run["output_throughput"])
            log(f"round {r + 1} {side}: {run['output_throughput']:.0f} output tok/s, failed {run['failed']}")
    med = {k: float(np.median(v)) for k, v in sides.items()}
    return {"baseline_src": args.baseline_src, "rounds": args.rounds, "output_tok_s": sides,
            "median_output_tok_s": med, "current_over_baseline": med["current"] / med["baseline"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama3-8b")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--num-requests", type=int, default=1000)
    p.add_argument("--rates", default="8,32,inf", help="comma-separated request rates (req/s); inf = all at once")
    p.add_argument("--min-prompt", type=int, default=128)
    p.add_argument("--max-prompt", type=int, default=1024)
    p.add_argument("--min-output", type=int, default=128)
    p.add_argument("--max-output", type=int, default=512)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=2048)
    p.add_argument("--engine-args", default="", help="extra flags for `python -m gpusleuth.engine serve`")
    p.add_argument("--hf-requests", type=int, default=192, help="requests for the baseline (a prefix of the list)")
    p.add_argument("--hf-batch-size", type=int, default=64)
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup-timeout", type=float, default=600)
    p.add_argument("--smoke", action="store_true", help="tiny preset on CPU with a handful of short requests")
    p.add_argument("--cpu-streams", type=int, default=0, help="tiny on CPU, this many streams at once")
    p.add_argument("--baseline-src", default="", help="checkout of an earlier commit: its server vs this one's")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds with --baseline-src")
    p.add_argument("--out", default="benchmarks/results/bench_engine_serving.json")
    args = p.parse_args()
    args.engine_args = args.engine_args.split()
    args.device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if args.smoke:
        args.preset, args.num_requests, args.rates = "tiny", 12, "20,inf"
        args.min_prompt, args.max_prompt, args.min_output, args.max_output = 8, 48, 4, 12
        args.hf_requests, args.hf_batch_size, args.max_num_seqs = 8, 4, 16
        args.engine_args += ["--device", "cpu", "--cpu-threads", "1"]
    if args.cpu_streams:
        args.preset, args.num_requests, args.rates, args.skip_hf = "tiny", args.cpu_streams, "inf", True
        args.min_prompt, args.max_prompt, args.min_output, args.max_output = 32, 128, 128, 256
        args.max_num_seqs = args.cpu_streams
        args.engine_args += ["--device", "cpu", "--cpu-threads", "1"]
    from gpusleuth.engine.config import preset

    args.vocab = preset(args.preset).vocab_size
    reqs = make_requests(args)
    rates = [float(r) for r in args.rates.split(",")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if args.baseline_src:
        result = {"benchmark": "engine_serving_http", "device": _device_name(args), "gpus": args.tp,
                  "preset": args.preset, "num_requests": args.num_requests, "host_cpus": os.cpu_count(),
                  **compare_servers(args, reqs, port)}
        log(f"current/baseline output tok/s: {result['current_over_baseline']:.3f} (medians of {args.rounds})")
        log(f"wrote {write_result(args.out, result)}")
        return
    server = start_server(args, port)
    runs = []
    try:
        asyncio.run(run_rate(args, port, args.preset, reqs[:4], float("inf")))  # warm-up (compiles, graphs)
        for rate in rates:
            log(f"rate {rate} req/s: {len(reqs)} requests ...")
            runs.append(asyncio.run(run_rate(args, port, args.preset, reqs, rate)))
            r = runs[-1]
            log(f"  output {r['output_throughput']:.0f} tok/s, TTFT median {r['ttft_ms']['median']:.0f} ms, "
                f"TPOT median {r['tpot_ms']['median']:.1f} ms, failed {r['failed']}")
    finally:
        stop_server(server)
    hf = None if args.skip_hf else hf_baseline(args, reqs)
    if hf:
        log(f"HF generate static batches: {hf['output_throughput']:.0f} output tok/s")
    best = max(r["output_throughput"] for r in runs)
    device = _device_name(args)
    result = {"benchmark": "engine_serving", "device": device, "gpus": args.tp, "preset": args.preset,
              "num_requests": args.num_requests, "runs": runs, "hf_generate": hf,
              "speedup_best_rate": best / hf["output_throughput"] if hf else None, "target_speedup": 5.0,
              "host_cpus": os.cpu_count()}
    if hf:
        log(f"engine/HF output throughput: {result['speedup_best_rate']:.2f}x (target 5x)")
    out = write_result(args.out, result)
    log(f"wrote {out}")


def _device_name(args) -> str:
    return torch.cuda.get_device_name() if args.device == "cuda" else "cpu"


if __name__ == "__main__":
    main()
